"""ALLOWED_MODELS: what the operator pays for, on both turn routes, before any upstream call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.settings import SettingsError, load_settings
from tests.conftest import bearer
from tests.e2e.test_rate_limits import turn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess


@pytest.fixture
def allowing_anthropic(start_api: Callable[..., WebProcess]) -> Iterator[httpx.Client]:
    web = start_api(ALLOWED_MODELS="anthropic/*, openai/gpt-4o-mini")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        yield http


def completion(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], **body},
        headers=bearer(key),
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "openai/gpt-4o"}, "model"),
        # `*` stops at `:`: a variant such as :online (paid web search) is not implied.
        ({"model": "anthropic/claude-sonnet-4.5:online"}, "model"),
        ({"model": "openrouter/auto"}, "model"),
        ({"models": ["anthropic/claude-sonnet-4.5", "openai/gpt-4o"]}, "models"),
        ({"plugins": [{"id": "web"}]}, "plugins"),
        ({"provider": {"order": ["anthropic"], "byok": True}}, "provider"),
    ],
)
@pytest.mark.parametrize("route", ["chat", "v1"])
def test_a_turn_that_could_leave_the_allowed_models_is_refused_before_the_call(
    allowing_anthropic: httpx.Client,
    standin: StandinServer,
    api_key: str,
    fields: dict[str, Any],
    field: str,
    route: str,
) -> None:
    send = turn if route == "chat" else completion
    answer = send(allowing_anthropic, api_key, **fields)

    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    if route == "chat":
        assert error["type"] == "model_not_allowed"
        assert error["field"] == field
    else:
        assert error["code"] == "model_not_allowed"
        assert error["param"] == field
    assert error["message"].startswith(f"{field}:")
    assert standin.control.requests(api_key) == []


@pytest.mark.parametrize(
    "fields",
    [
        {},  # the default model, anthropic/claude-sonnet-4.5
        {"model": "openai/gpt-4o-mini"},
        {"models": ["anthropic/claude-haiku-4.5"]},
        {"provider": {"order": ["anthropic"], "allow_fallbacks": False, "sort": "price"}},
        # A retired id, sent as its allowed successor.
        {"model": "anthropic/claude-3.5-sonnet"},
    ],
)
def test_turns_within_the_allowed_models_pass(
    allowing_anthropic: httpx.Client, standin: StandinServer, api_key: str, fields: dict[str, Any]
) -> None:
    answer = turn(allowing_anthropic, api_key, **fields)

    assert answer.status_code == 200, answer.text
    assert len(standin.control.requests(api_key)) == 1


def test_without_allowed_models_every_model_and_field_passes_upstream(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    answer = turn(client, api_key, model="openai/gpt-4o", provider={"order": ["openai"]})

    assert answer.status_code == 200, answer.text
    assert standin.control.requests(api_key)[0]["body"]["provider"] == {"order": ["openai"]}


def test_a_default_model_outside_the_allowed_models_stops_the_start() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"ALLOWED_MODELS": "openai/*"})

    message = str(raised.value)
    assert "OPENROUTER_DEFAULT_MODEL" in message
    assert "anthropic/claude-sonnet-4.5" in message
