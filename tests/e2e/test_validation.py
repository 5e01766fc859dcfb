"""Bad input to POST /chat: a 4xx naming the field, nothing stored, nothing sent upstream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import bearer
from tests.e2e.test_chat import chat_ok

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

# The defaults the shared API process runs with.
DEFAULTS = Settings()
MAX_MESSAGE_CHARS = 32_000


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> None:
    """The one error body shape, with the request id of the response."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["status"] == status
    assert isinstance(error["type"], str)
    assert error["type"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert error["field"] == field
        assert field in error["message"]


def assert_nothing_happened(r: redis.Redis, standin: StandinServer, key: str) -> None:
    assert r.dbsize() == 0
    assert standin.control.requests(key) == []


BAD_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("empty message", {"message": ""}, "message"),
    ("whitespace message", {"message": " \t\n "}, "message"),
    ("message over the limit", {"message": "x" * (MAX_MESSAGE_CHARS + 1)}, "message"),
    ("missing message", {"model": "openai/gpt-4o-mini"}, "message"),
    ("temperature below 0", {"message": "hi", "temperature": -0.1}, "temperature"),
    ("temperature above 2", {"message": "hi", "temperature": 2.1}, "temperature"),
    ("max_tokens 0", {"message": "hi", "max_tokens": 0}, "max_tokens"),
    (
        "max_tokens over the limit",
        {"message": "hi", "max_tokens": DEFAULTS.max_tokens_limit + 1},
        "max_tokens",
    ),
    ("session_id with a space", {"message": "hi", "session_id": "a b"}, "session_id"),
    ("session_id of 65 chars", {"message": "hi", "session_id": "a" * 65}, "session_id"),
    ("session_id with a newline", {"message": "hi", "session_id": "a\n"}, "session_id"),
    ("session_id with braces", {"message": "hi", "session_id": "{x}"}, "session_id"),
    ("empty session_id", {"message": "hi", "session_id": ""}, "session_id"),
    ("message a number", {"message": 123}, "message"),
    ("message null", {"message": None}, "message"),
    ("temperature a string", {"message": "hi", "temperature": "warm"}, "temperature"),
    ("max_tokens a float", {"message": "hi", "max_tokens": 1.5}, "max_tokens"),
    ("max_tokens a string", {"message": "hi", "max_tokens": "10"}, "max_tokens"),
    ("max_tokens a bool", {"message": "hi", "max_tokens": True}, "max_tokens"),
    ("session_id a number", {"message": "hi", "session_id": 7}, "session_id"),
    ("model a number", {"message": "hi", "model": 7}, "model"),
    ("system_prompt a list", {"message": "hi", "system_prompt": ["be nice"]}, "system_prompt"),
]


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in BAD_FIELDS], ids=[case[0] for case in BAD_FIELDS]
)
def test_bad_field_is_400_naming_it(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    body: dict[str, Any],
    field: str,
) -> None:
    response = client.post("/chat", json=body, headers=bearer(api_key))

    assert_error(response, 400, field)
    assert_nothing_happened(redis_client, standin, api_key)


def test_message_of_exactly_the_limit_is_accepted(client: httpx.Client, api_key: str) -> None:
    answer = chat_ok(client, api_key, message="x" * MAX_MESSAGE_CHARS, max_tokens=1)
    assert answer["session_id"]


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b'{"message": "hi"', "truncated JSON"),
        (b"{message: 'hi'}", "not JSON"),
        (b'["hi"]', "an array"),
        (b'"hi"', "a string"),
        (b"null", "null"),
        (b"", "empty body"),
        (b'{"message": "half \\ud800 a pair"}', "a lone surrogate"),
        (b'{"message": "caf\xc3"}', "invalid UTF-8"),
    ],
)
def test_body_that_is_not_a_json_object_is_400(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    content: bytes,
    name: str,
) -> None:
    headers = {**bearer(api_key), "Content-Type": "application/json"}
    response = client.post("/chat", content=content, headers=headers)

    assert_error(response, 400)
    assert_nothing_happened(redis_client, standin, api_key)


def test_body_over_max_body_bytes_is_413(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    padding = "x" * DEFAULTS.max_body_bytes
    response = client.post("/chat", json={"message": padding}, headers=bearer(api_key))

    assert_error(response, 413)
    assert_nothing_happened(redis_client, standin, api_key)


def test_chunked_body_over_max_body_bytes_is_413(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must hold while the body streams in.
        yield b'{"message": "'
        for _ in range(DEFAULTS.max_body_bytes // 65_536 + 1):
            yield b"x" * 65_536
        yield b'"}'

    headers = {**bearer(api_key), "Content-Type": "application/json"}
    response = client.post("/chat", content=chunks(), headers=headers)

    assert_error(response, 413)
    assert_nothing_happened(redis_client, standin, api_key)


@pytest.mark.parametrize(
    "authorization",
    # An empty bearer is `Bearer` alone: HTTP strips a header value's trailing blanks.
    [None, "Basic c2stb3ItdjE6eA==", "Bearer", "sk-or-v1-abc", "Bearer sk-or-v1-a b"],
    ids=["missing", "basic", "empty bearer", "bare key", "key with a space"],
)
def test_missing_or_malformed_authorization_is_401(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    authorization: str | None,
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    sent_before = standin.control.stats()["chat_requests"]
    response = client.post("/chat", json={"message": "hi"}, headers=headers)

    assert_error(response, 401)
    assert redis_client.dbsize() == 0
    assert standin.control.stats()["chat_requests"] == sent_before


def test_error_carries_the_clients_request_id(client: httpx.Client, api_key: str) -> None:
    headers = {**bearer(api_key), "X-Request-ID": "trace-1234.abc"}
    response = client.post("/chat", json={"message": ""}, headers=headers)

    assert_error(response, 400, "message")
    assert response.headers["x-request-id"] == "trace-1234.abc"


@pytest.fixture
def small_limits(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> Iterator[httpx.Client]:
    web = start_api(MAX_MESSAGE_CHARS="10", MAX_TOKENS_LIMIT="100")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        yield http


def test_limits_follow_the_environment(
    small_limits: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    long_message = small_limits.post("/chat", json={"message": "x" * 11}, headers=bearer(api_key))
    many_tokens = small_limits.post(
        "/chat", json={"message": "hi", "max_tokens": 101}, headers=bearer(api_key)
    )

    assert_error(long_message, 400, "message")
    assert_error(many_tokens, 400, "max_tokens")
    assert_nothing_happened(redis_client, standin, api_key)
    # The limits themselves are allowed.
    chat_ok(small_limits, api_key, message="x" * 10, max_tokens=100)


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [TOOL]},
        {"tools": [TOOL], "tool_choice": "auto"},
        {"tool_choice": "none"},
        {"functions": [TOOL["function"]]},
    ],
    ids=["tools", "tools and choice", "tool_choice", "functions"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_tools_on_chat_are_refused_pointing_to_v1(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    fields: dict[str, Any],
    stream: bool,
) -> None:
    # /chat cannot send a tool's result back: a call it stored would never be answered.
    body = {"message": "what is the weather?", "stream": stream, **fields}
    response = client.post("/chat", json=body, headers=bearer(api_key))

    assert_error(response, 400, field=next(iter(fields)))
    error = response.json()["error"]
    assert "/v1/chat/completions" in error["message"]
    assert "X-Session-Id" in error["message"]
    assert_nothing_happened(redis_client, standin, api_key)
