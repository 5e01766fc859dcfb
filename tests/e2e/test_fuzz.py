"""Property-based fuzzing of the whole HTTP API, generated from its own OpenAPI document.

Every operation the running API documents is exercised with schemathesis (valid and invalid
inputs alike) against a real API process, a real Redis and the stand-in. Every answer must
be documented, match its schema and never be a 5xx of ours; after every request, Redis must
hold only whole turns.

The operations are read from the document at run time, so a route added later is fuzzed
without a change here; a route guarded by a new kind of credential needs one in
`headers_of`. Plain pytest and hypothesis drive schemathesis: its pytest plugin sets a node
attribute that pytest 9.2 no longer has.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import ignored_auth, positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Err, Ok

from tests.conftest import base_env
from tests.support.processes import WebProcess
from tests.support.redis_server import free_port
from tests.support.redis_state import broken_turns, session_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

    from schemathesis import APIOperation, BaseSchema, Case
    from schemathesis.core.errors import InvalidSchema

    from tests.standin import StandinServer

ADMIN_TOKEN = "fuzz-admin-" + secrets.token_hex(16)
FUZZ_KEY = "sk-or-v1-" + secrets.token_hex(32)
# Enough to reach every branch of the small request schemas; bounded so the run stays short.
EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def fuzzed_api(redis_url: str, standin: StandinServer) -> Iterator[WebProcess]:
    """The API with every optional route present, so the document lists them all."""
    env = {**base_env(redis_url, standin), "ADMIN_TOKEN": ADMIN_TOKEN}
    with WebProcess(env, free_port()) as web:
        yield web


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: WebProcess) -> BaseSchema:
    # Unknown query parameters are ignored, as HTTP APIs commonly do: not generated.
    config = SchemathesisConfig.from_dict({"generation": {"allow-extra-parameters": False}})
    return schemathesis.openapi.from_url(
        f"{fuzzed_api.url}/openapi.json", config=config, timeout=10
    )


def headers_of(case: Case[Any]) -> dict[str, Any]:
    """The case's headers, with a working bearer unless the case means its headers to be bad.

    The admin token on /admin, a caller's key elsewhere. A case whose headers are generated
    to break the document (no Authorization, a malformed one) is sent as generated.
    """
    headers: dict[str, Any] = dict(case.headers or {})
    info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if info is not None and info.mode is GenerationMode.NEGATIVE:
        return headers
    token = ADMIN_TOKEN if case.path.startswith("/admin") else FUZZ_KEY
    return {**headers, "Authorization": f"Bearer {token}"}


# Not checked, because the API means otherwise:
# - that every schema-valid request succeeds: a valid-looking one may still be refused for
#   reasons the document cannot state (a model OpenRouter does not have, whose 400 is passed
#   on; a `max_tokens` over the server's MAX_TOKENS_LIMIT setting);
# - that made-up credentials are refused: any well-formed bearer is a caller's own key, whose
#   sessions are simply none yet (OpenRouter alone judges a key, on /chat).
NOT_CHECKED = [positive_data_acceptance, ignored_auth]


def fuzz(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    base_url: str,
    store: redis.Redis,
) -> None:
    """Hypothesis over one operation: each answer as documented, Redis whole afterwards."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def answers_as_documented(case: Case[Any]) -> None:
        case.call_and_validate(
            base_url=base_url, headers=headers_of(case), timeout=30, excluded_checks=NOT_CHECKED
        )
        assert broken_turns(store) == []

    answers_as_documented()


def unwrap(
    result: Ok[APIOperation[Any, Any, Any, Any]] | Err[InvalidSchema],
) -> APIOperation[Any, Any, Any, Any]:
    if isinstance(result, Err):
        raise AssertionError(f"the document does not describe an operation: {result.err()}")
    return result.ok()


def test_every_documented_operation_answers_as_documented(
    api_schema: BaseSchema, fuzzed_api: WebProcess, store: redis.Redis, standin: StandinServer
) -> None:
    operations = [unwrap(result) for result in api_schema.get_all_operations()]
    assert len(operations) >= 9, "the document lists every route, admin ones included"
    failures: list[str] = []
    for operation in operations:
        for mode in GenerationMode:
            try:
                fuzz(operation, mode, fuzzed_api.url, store)
            except Unsatisfiable:
                pass  # no input of this operation can break its document (e.g. GET /health)
            except Exception as exc:
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)
    # The fuzzing went deep enough to reach OpenRouter and to store turns.
    assert standin.control.requests(FUZZ_KEY)
    assert session_ids(store)
