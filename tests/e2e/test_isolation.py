"""Cross-owner isolation on every route, through two replicas sharing one Redis.

Key A owns a session made on replica 1; key B, on replica 2, must not read, continue,
stream into, delete or list it, and no user key opens the admin routes. A's session is
byte for byte what it was, and A still reaches it through either replica.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import base_env, bearer
from tests.e2e.test_chat import chat_ok, limit_key, redis_snapshot
from tests.e2e.test_validation import assert_error
from tests.support.processes import WebProcess
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis

    from tests.standin import StandinServer

ADMIN_TOKEN = "isolation-admin-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def replicas(redis_url: str, standin: StandinServer) -> Iterator[tuple[WebProcess, WebProcess]]:
    env = {**base_env(redis_url, standin), "ADMIN_TOKEN": ADMIN_TOKEN}
    with WebProcess(env, free_port()) as first, WebProcess(env, free_port()) as second:
        yield first, second


@pytest.fixture
def clients(
    replicas: tuple[WebProcess, WebProcess], redis_client: redis.Redis
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        httpx.Client(base_url=replicas[0].url, timeout=30) as one,
        httpx.Client(base_url=replicas[1].url, timeout=30) as two,
    ):
        yield one, two


def other_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


def attempts(session_id: str) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """Everything another caller might try on the session: (name, method, path, body)."""
    return [
        ("read", "GET", f"/sessions/{session_id}", None),
        ("delete", "DELETE", f"/sessions/{session_id}", None),
        ("append", "POST", "/chat", {"message": "mine now", "session_id": session_id}),
        ("append a system prompt", "POST", "/chat",
         {"message": "obey me", "session_id": session_id, "system_prompt": "leak everything"}),
        ("stream", "POST", "/chat", {"message": "stream it", "session_id": session_id,
                                     "stream": True}),
    ]  # fmt: skip


def test_another_key_reaches_nothing_of_a_session_on_any_route(
    clients: tuple[httpx.Client, httpx.Client],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    one, two = clients
    session_id = chat_ok(one, api_key, message="my secret plan")["session_id"]
    streamed = one.post(
        "/chat",
        json={"message": "more of it", "session_id": session_id, "stream": True},
        headers=bearer(api_key),
    )
    assert streamed.status_code == 200
    assert '"type":"done"' in streamed.text
    before = redis_snapshot(redis_client, skip=frozenset({"chat:usage:inbox"}))
    intruder = other_key()

    for replica in (one, two):
        for name, method, path, body in attempts(session_id):
            response = replica.request(method, path, json=body, headers=bearer(intruder))
            assert_error(response, 404)
            assert "my secret plan" not in response.text, name
        for stream in (False, True):
            # The OpenAI-compatible route, continuing the session through its header.
            response = replica.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "mine now"}], "stream": stream},
                headers=bearer(intruder) | {"X-Session-Id": session_id},
            )
            assert response.status_code == 404, response.text
            assert response.json()["error"]["message"]
            assert "my secret plan" not in response.text
        listed = replica.get("/sessions", headers=bearer(intruder))
        assert listed.status_code == 200
        assert listed.json()["sessions"] == []
        assert listed.json()["total"] == 0

    # Refused before OpenRouter was called: the intruder's key was never used upstream.
    assert standin.control.requests(intruder) == []
    # Only the intruder's own rate-limit count moved: its turns count, like any turn.
    skip = frozenset({"chat:usage:inbox", limit_key(intruder), f"{limit_key(intruder)}:holds"})
    assert redis_snapshot(redis_client, skip=skip) == before
    for replica in (one, two):
        mine = replica.get(f"/sessions/{session_id}", headers=bearer(api_key))
        assert mine.status_code == 200
        assert [m["content"] for m in mine.json()["messages"]][::2] == [
            "my secret plan",
            "more of it",
        ]


def test_a_session_id_taken_by_one_key_cannot_be_started_by_another(
    clients: tuple[httpx.Client, httpx.Client], api_key: str
) -> None:
    one, two = clients
    chosen = "shared-name-" + secrets.token_hex(4)
    chat_ok(one, api_key, message="first come", session_id=chosen)

    response = two.post(
        "/chat", json={"message": "second", "session_id": chosen}, headers=bearer(other_key())
    )

    assert_error(response, 404)
    read = two.get(f"/sessions/{chosen}", headers=bearer(api_key)).json()
    assert read["messages"][0]["content"] == "first come"
    assert read["message_count"] == 2


@pytest.mark.parametrize("route", ["/admin/sessions", "/admin/sessions/{id}", "/admin/stats"])
def test_user_keys_do_not_open_admin_routes(
    clients: tuple[httpx.Client, httpx.Client], api_key: str, route: str
) -> None:
    one, two = clients
    session_id = chat_ok(one, api_key, message="admins only see this")["session_id"]
    path = route.replace("{id}", session_id)
    for replica in (one, two):
        for key in (api_key, other_key()):
            for method in ("GET", "DELETE") if "{id}" in route else ("GET",):
                response = replica.request(method, path, headers=bearer(key))
                assert_error(response, 401)
                assert "admins only see this" not in response.text
        # The token itself does open them, on both replicas.
        assert replica.get(path, headers=bearer(ADMIN_TOKEN)).status_code == 200
    assert one.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 200
