"""Failed authentications: a key OpenRouter refused is remembered, so it costs no upstream call
twice, and a client address that fails too often is refused for the rest of its minute."""

from __future__ import annotations

import hashlib
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


def from_address(address: str) -> dict[str, str]:
    """The test's requests come from 127.0.0.1, a proxy uvicorn trusts by default
    (FORWARDED_ALLOW_IPS): it names the client's address."""
    return {"X-Forwarded-For": address}


def refused_marker(key: str) -> str:
    return f"chat:refused:{{{owner_id(key, SESSION_SECRET.encode())}}}"


def turn(
    http: httpx.Client, key: str, *, address: str = "127.0.0.1", **body: Any
) -> httpx.Response:
    headers = bearer(key) | from_address(address)
    return http.post("/chat", json={"message": "hi", **body}, headers=headers)


def completion(http: httpx.Client, key: str, session: str | None = None) -> httpx.Response:
    headers = bearer(key) | ({"X-Session-Id": session} if session else {})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    return http.post("/v1/chat/completions", json=body, headers=headers)


def assert_too_many_failures(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert "upstream_status" not in error
    assert "failed authentications" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 60


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


# ---- failed authentications per client address ---------------------------------------------


def test_random_keys_from_one_address_reach_openrouter_only_up_to_the_limit(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    keys = [unknown_key() for _ in range(22)]
    # The default: AUTH_FAILURES_PER_MINUTE=20 (the suite's other tests turn it off).
    with httpx.Client(base_url=start_api(AUTH_FAILURES_PER_MINUTE="").url, timeout=30) as http:
        refused = [turn(http, key, address="203.0.113.7") for key in keys[:20]]
        over = [turn(http, key, address="203.0.113.7") for key in keys[20:]]
        # A good key from that address waits too: nothing tells it from a random one there.
        good = turn(http, api_key, address="203.0.113.7")
        # Another address is not concerned, nor routes that call no one upstream.
        elsewhere = turn(http, api_key, address="203.0.113.8")
        listing = http.get("/sessions", headers=bearer(api_key) | from_address("203.0.113.7"))

    assert [r.status_code for r in refused] == [401] * 20
    for response in [*over, good]:
        assert_too_many_failures(response)
    # The last two random keys were refused before OpenRouter, and so was the good one.
    assert [len(standin.control.requests(key)) for key in keys] == [1] * 20 + [0, 0]
    assert (elsewhere.status_code, listing.status_code) == (200, 200)
    assert len(standin.control.requests(api_key)) == 1
    ttl: int = redis_client.ttl("chat:authfail:{203.0.113.7}")  # type: ignore[assignment]
    assert 0 < ttl <= 60


def test_a_remembered_refusal_counts_as_a_failure_too(
    start_api: Callable[..., WebProcess], standin: StandinServer, redis_client: redis.Redis
) -> None:
    key = unknown_key()
    with httpx.Client(base_url=start_api(AUTH_FAILURES_PER_MINUTE="3").url, timeout=30) as http:
        statuses = [turn(http, key).status_code for _ in range(3)]
        fourth = turn(http, key)

    assert statuses == [401, 401, 401]
    assert_too_many_failures(fourth)
    assert len(standin.control.requests(key)) == 1


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/chat"), ("GET", "/sessions"), ("POST", "/v1/chat/completions")]
)
def test_bad_authorization_headers_are_401_then_429_on_every_keyed_route(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis, method: str, path: str
) -> None:
    bad = [{}, {"Authorization": "Basic d2ViOnRva2Vu"}, {"Authorization": "Bearer"}]
    body = {"message": "hi", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=start_api(AUTH_FAILURES_PER_MINUTE="3").url, timeout=30) as http:

        def send(headers: dict[str, str]) -> httpx.Response:
            json = body if method == "POST" else None
            return http.request(method, path, json=json, headers=headers)

        answers = [send(headers) for headers in bad]
        over = send({"Authorization": "Bearer"})

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert over.status_code == 429, over.text
    assert 1 <= int(over.headers["retry-after"]) <= 60


def test_in_server_key_mode_unknown_tokens_are_limited_and_known_ones_served(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> None:
    token = secrets.token_urlsafe(32)
    web = start_api(
        OPENROUTER_API_KEY="sk-or-v1-" + secrets.token_hex(32),
        APP_TOKENS=f"web:{hashlib.sha256(token.encode()).hexdigest()}",
        AUTH_FAILURES_PER_MINUTE="2",
    )
    with httpx.Client(base_url=web.url, timeout=30) as http:
        guesses = [turn(http, secrets.token_urlsafe(32)) for _ in range(3)]
        known = turn(http, token)

    assert [g.status_code for g in guesses[:2]] == [401, 401]
    assert_too_many_failures(guesses[2])
    # An app token is checked here, not upstream: the address's failures do not stop it.
    assert known.status_code == 200, known.text


def test_an_ipv6_client_counts_by_its_64(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> None:
    with httpx.Client(base_url=start_api(AUTH_FAILURES_PER_MINUTE="2").url, timeout=30) as http:

        def fail(address: str) -> int:
            return http.get("/sessions", headers=from_address(address)).status_code

        same_64 = [fail("2001:db8:1:2::1"), fail("2001:db8:1:2:ffff::9"), fail("2001:db8:1:2::3")]
        other_64 = fail("2001:db8:1:3::1")

    assert (same_64, other_64) == ([401, 401, 429], 401)


def test_the_failures_of_an_address_count_on_every_replica(
    start_api: Callable[..., WebProcess], standin: StandinServer, redis_client: redis.Redis
) -> None:
    one, two = (start_api(AUTH_FAILURES_PER_MINUTE="2") for _ in range(2))
    keys = [unknown_key() for _ in range(3)]
    with httpx.Client(timeout=30) as http:

        def send(web: WebProcess, key: str) -> httpx.Response:
            return http.post(f"{web.url}/chat", json={"message": "hi"}, headers=bearer(key))

        statuses = [send(one, keys[0]).status_code, send(two, keys[1]).status_code]
        third = send(one, keys[2])

    assert statuses == [401, 401]
    assert_too_many_failures(third)
    assert len(standin.control.requests(keys[2])) == 0


def test_auth_failures_per_minute_0_never_refuses_an_address(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> None:
    with httpx.Client(base_url=start_api(AUTH_FAILURES_PER_MINUTE="0").url, timeout=30) as http:
        statuses = {http.get("/sessions").status_code for _ in range(30)}

    assert statuses == {401}
