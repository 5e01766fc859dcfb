"""Failed authentications cost no upstream call twice: a key OpenRouter refused is remembered."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, bearer

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess


def unknown_key() -> str:
    """A key OpenRouter (the stand-in) does not know: it answers 401 `User not found.`"""
    return "sk-or-v1-revoked-" + secrets.token_hex(16)


def refused_marker(key: str) -> str:
    return f"chat:refused:{{{owner_id(key, SESSION_SECRET.encode())}}}"


def turn(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json={"message": "hi", **body}, headers=bearer(key))


def completion(http: httpx.Client, key: str, session: str | None = None) -> httpx.Response:
    headers = bearer(key) | ({"X-Session-Id": session} if session else {})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    return http.post("/v1/chat/completions", json=body, headers=headers)


@pytest.mark.parametrize(
    "limits",
    [{}, {"RATE_LIMIT_PER_MINUTE": "0"}],
    ids=["with-rate-limits", "without-rate-limits"],
)
def test_a_key_openrouter_refused_is_refused_again_without_an_upstream_call(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    limits: dict[str, str],
) -> None:
    key = unknown_key()
    with httpx.Client(base_url=start_api(**limits).url, timeout=30) as http:
        first = turn(http, key)
        assert first.status_code == 401, first.text
        assert first.json()["error"]["message"] == "User not found."
        chat_again = [
            turn(http, key),
            turn(http, key, stream=True),
            turn(http, key, session_id="a-session-of-its-own"),
        ]
        openai_again = [completion(http, key), completion(http, key, "new")]

    # One call reached OpenRouter; every other turn of the key was answered without it.
    assert len(standin.control.requests(key)) == 1
    for response in chat_again:
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert (error["type"], error["upstream_status"]) == ("upstream_unauthorized", 401)
        assert "OpenRouter refused this key within the last 300 s" in error["message"]
    for response in openai_again:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "upstream_unauthorized"
    # Remembered by the key's HMAC, for REFUSED_KEY_SECONDS.
    ttl: int = redis_client.ttl(refused_marker(key))  # type: ignore[assignment]
    assert 290 <= ttl <= 300
    assert redis_client.get(refused_marker(key)) == b"1"


def test_a_refused_key_is_asked_about_again_after_refused_key_seconds(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    # Refused once, then OpenRouter knows the key again (it was re-enabled).
    standin.control.script(api_key, {"status": 401, "message": "User not found."})
    with httpx.Client(base_url=start_api(REFUSED_KEY_SECONDS="1").url, timeout=30) as http:
        statuses = [turn(http, api_key).status_code, turn(http, api_key).status_code]
        assert len(standin.control.requests(api_key)) == 1
        time.sleep(1.2)
        statuses.append(turn(http, api_key).status_code)

    assert statuses == [401, 401, 200]
    assert len(standin.control.requests(api_key)) == 2


def test_refused_key_seconds_0_asks_openrouter_every_time(
    start_api: Callable[..., WebProcess], standin: StandinServer, redis_client: redis.Redis
) -> None:
    key = unknown_key()
    with httpx.Client(base_url=start_api(REFUSED_KEY_SECONDS="0").url, timeout=30) as http:
        statuses = [turn(http, key).status_code for _ in range(2)]

    assert statuses == [401, 401]
    assert len(standin.control.requests(key)) == 2
    assert not redis_client.exists(refused_marker(key))
