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

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.e2e.test_chat import chat_ok, redis_snapshot
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


def owner_keys(r: redis.Redis, key: str) -> dict[str, Any]:
    """Every key of one owner's sessions, with its value."""
    owner = owner_id(key, SESSION_SECRET.encode())
    return {
        name: value
        for name, value in redis_snapshot(r).items()
        if name.startswith(f"chat:{{{owner}:") or name == f"chat:owner:{owner}:sessions"
    }


def test_another_key_reaches_nothing_of_a_session_on_any_route(
    clients: tuple[httpx.Client, httpx.Client],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    """Session ids are scoped to their owner: another key naming the same id reaches a
    session of its own, and no answer tells it that the id is someone else's."""
    one, two = clients
    session_id = chat_ok(one, api_key, message="my secret plan")["session_id"]
    streamed = one.post(
        "/chat",
        json={"message": "more of it", "session_id": session_id, "stream": True},
        headers=bearer(api_key),
    )
    assert streamed.status_code == 200
    assert '"type":"done"' in streamed.text
    before = owner_keys(redis_client, api_key)
    unknown_id = "never-used-" + secrets.token_hex(4)

    for replica in (one, two):
        intruder = other_key()
        for name, method, path, body in attempts(session_id):
            response = replica.request(method, path, json=body, headers=bearer(intruder))
            assert "my secret plan" not in response.text, name
            # Exactly what the same request naming an id nobody uses gets.
            fresh = other_key()
            unused = path.replace(session_id, unknown_id)
            same = replica.request(
                method,
                unused,
                json=body and {**body, "session_id": unknown_id},
                headers=bearer(fresh),
            )
            assert response.status_code == same.status_code, name
            if response.status_code >= 400:
                assert response.json()["error"]["type"] == same.json()["error"]["type"]
        for stream in (False, True):
            # The OpenAI-compatible route, continuing the session through its header.
            response = replica.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "mine now"}], "stream": stream},
                headers=bearer(intruder) | {"X-Session-Id": session_id},
            )
            assert response.status_code == 200, response.text
            assert "my secret plan" not in response.text
        # Upstream only ever saw the intruder's own messages.
        for record in standin.control.requests(intruder):
            assert "my secret plan" not in str(record["body"]["messages"])
        listed = replica.get("/sessions", headers=bearer(intruder)).json()
        assert [s["session_id"] for s in listed["sessions"]] == [session_id]
        assert listed["sessions"][0]["title"] != "my secret plan"

    assert owner_keys(redis_client, api_key) == before
    for replica in (one, two):
        mine = replica.get(f"/sessions/{session_id}", headers=bearer(api_key))
        assert mine.status_code == 200
        assert [m["content"] for m in mine.json()["messages"]][::2] == [
            "my secret plan",
            "more of it",
        ]


def test_two_keys_can_use_the_same_session_id(
    clients: tuple[httpx.Client, httpx.Client], api_key: str
) -> None:
    one, two = clients
    other = other_key()
    for replica, key, message in ((one, api_key, "first come"), (two, other, "second")):
        answer = chat_ok(replica, key, message=message, session_id="default")
        assert answer["session_id"] == "default"

    for replica, key, message in ((two, api_key, "first come"), (one, other, "second")):
        read = replica.get("/sessions/default", headers=bearer(key)).json()
        assert [m["content"] for m in read["messages"]][::2] == [message]


@pytest.mark.parametrize("route", ["/admin/sessions", "/admin/sessions/{id}", "/admin/stats"])
def test_user_keys_do_not_open_admin_routes(
    clients: tuple[httpx.Client, httpx.Client], api_key: str, route: str
) -> None:
    one, two = clients
    session_id = chat_ok(one, api_key, message="admins only see this")["session_id"]
    path = route.replace("{id}", f"{owner_id(api_key, SESSION_SECRET.encode())}/{session_id}")
    for replica in (one, two):
        for key in (api_key, other_key()):
            for method in ("GET", "DELETE") if "{id}" in route else ("GET",):
                response = replica.request(method, path, headers=bearer(key))
                assert_error(response, 401)
                assert "admins only see this" not in response.text
        # The token itself does open them, on both replicas.
        assert replica.get(path, headers=bearer(ADMIN_TOKEN)).status_code == 200
    assert one.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 200
