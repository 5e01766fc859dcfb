"""The caller's sessions: listing, reading, deleting, ownership and expiry by TTL."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, bearer

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.support.processes import WebProcess

# The documented default of SESSION_CLEANUP_HOURS; the shared API runs with defaults.
DEFAULT_CLEANUP_HOURS = 24
MODEL = "openai/gpt-4o-mini"


def new_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


def chat(http: httpx.Client, key: str, message: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/chat", json={"message": message, **fields}, headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def when(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), f"{value} is not UTC"
    return parsed


def ref(key: str, session_id: str) -> str:
    """The session's name in Redis: its owner and its id."""
    return f"{owner_id(key, SESSION_SECRET.encode())}:{session_id}"


def session_keys(redis_client: redis.Redis, session_id: str) -> set[bytes]:
    # Ids are unique in a test: the owner part of the tag needs no naming.
    return set(redis_client.scan_iter(match=f"chat:{{*:{session_id}}}:*"))


def pttl(redis_client: redis.Redis, key: bytes) -> int:
    return cast("int", redis_client.pttl(key))


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["status"] == status
    assert error["type"] == error_type
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# ---- GET /sessions ---------------------------------------------------------------------------


def test_list_shows_own_sessions_most_recent_first(client: httpx.Client, api_key: str) -> None:
    first = chat(client, api_key, "first question", model=MODEL)
    second = chat(client, api_key, "second question")
    third = chat(client, api_key, "third question", model=MODEL)
    # Continuing the first session makes it the most recently active one.
    again = chat(client, api_key, "follow-up", session_id=first["session_id"])
    other = chat(client, new_key(), "someone else's question")

    response = client.get("/sessions", headers=bearer(api_key))

    assert response.status_code == 200
    page = response.json()
    ids = [s["session_id"] for s in page["sessions"]]
    assert ids == [first["session_id"], third["session_id"], second["session_id"]]
    assert other["session_id"] not in ids
    assert page["total"] == 3
    assert page["next_offset"] is None
    by_id = {s["session_id"]: s for s in page["sessions"]}
    top = by_id[first["session_id"]]
    fields = {"session_id", "title", "model", "message_count", "created_at", "updated_at"}
    assert set(top) >= fields
    # The title stays the first user message; the model is the latest turn's.
    assert top["title"] == "first question"
    assert top["model"] == again["model_used"]
    assert top["message_count"] == 4
    assert when(top["updated_at"]) > when(top["created_at"])
    assert by_id[second["session_id"]]["title"] == "second question"
    assert by_id[second["session_id"]]["model"] == second["model_used"]
    assert by_id[second["session_id"]]["message_count"] == 2
    assert by_id[third["session_id"]]["model"] == third["model_used"]


def test_list_of_another_key_holds_only_its_sessions(client: httpx.Client, api_key: str) -> None:
    chat(client, api_key, "mine")
    other_key = new_key()
    theirs = chat(client, other_key, "theirs")

    page = client.get("/sessions", headers=bearer(other_key)).json()

    assert [s["session_id"] for s in page["sessions"]] == [theirs["session_id"]]
    assert page["total"] == 1


def test_list_is_empty_for_a_new_key(client: httpx.Client, api_key: str) -> None:
    page = client.get("/sessions", headers=bearer(api_key)).json()

    assert page["sessions"] == []
    assert page["total"] == 0
    assert page["next_offset"] is None


def test_list_paginates_with_limit_and_offset(client: httpx.Client, api_key: str) -> None:
    created = [chat(client, api_key, f"question {n}")["session_id"] for n in range(5)]
    newest_first = created[::-1]

    seen: list[str] = []
    offset: int | None = 0
    pages = []
    while offset is not None:
        response = client.get(
            "/sessions", params={"limit": 2, "offset": offset}, headers=bearer(api_key)
        )
        assert response.status_code == 200
        page = response.json()
        assert page["total"] == 5
        assert page["limit"] == 2
        assert page["offset"] == offset
        seen += [s["session_id"] for s in page["sessions"]]
        pages.append(page)
        offset = page["next_offset"]

    assert seen == newest_first
    assert [len(p["sessions"]) for p in pages] == [2, 2, 1]
    assert [p["next_offset"] for p in pages] == [2, 4, None]


def test_list_offset_past_the_end_is_an_empty_page(client: httpx.Client, api_key: str) -> None:
    chat(client, api_key, "only one")

    page = client.get("/sessions", params={"offset": 5}, headers=bearer(api_key)).json()

    assert page["sessions"] == []
    assert page["total"] == 1
    assert page["next_offset"] is None


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"limit": "many"}, {"offset": "-1"}],
)
def test_list_limit_and_offset_out_of_bounds_are_400(
    client: httpx.Client, api_key: str, params: dict[str, str]
) -> None:
    response = client.get("/sessions", params=params, headers=bearer(api_key))

    error = assert_error(response, 400, "invalid_request")
    assert next(iter(params)) in error["message"]


def test_list_accepts_the_largest_limit(client: httpx.Client, api_key: str) -> None:
    response = client.get("/sessions", params={"limit": 100}, headers=bearer(api_key))

    assert response.status_code == 200
    assert response.json()["limit"] == 100


# ---- GET /sessions/{id} ----------------------------------------------------------------------


def test_read_returns_metadata_and_messages(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    one = chat(client, api_key, "Hello there", model=MODEL, system_prompt="Answer briefly.")
    two = chat(client, api_key, "And again?", session_id=one["session_id"])

    response = client.get(f"/sessions/{one['session_id']}", headers=bearer(api_key))

    assert response.status_code == 200
    session = response.json()
    assert session["session_id"] == one["session_id"]
    assert session["title"] == "Hello there"
    assert session["model"] == two["model_used"]
    assert session["message_count"] == 4
    assert session["system_prompt"] == "Answer briefly."
    created, updated = when(session["created_at"]), when(session["updated_at"])
    assert created <= updated
    # Every key of the session lives SESSION_CLEANUP_HOURS past the last turn.
    expected_expiry = updated + timedelta(hours=DEFAULT_CLEANUP_HOURS)
    assert abs(when(session["expires_at"]) - expected_expiry) < timedelta(seconds=30)
    ttl_ms = DEFAULT_CLEANUP_HOURS * 3_600_000
    for key in session_keys(redis_client, one["session_id"]):
        assert ttl_ms - 60_000 < pttl(redis_client, key) <= ttl_ms, key

    messages = session["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in messages] == [
        "Hello there",
        one["response"],
        "And again?",
        two["response"],
    ]
    stamps = [when(m["timestamp"]) for m in messages]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - updated) < timedelta(seconds=1)
    for message, turn in ((messages[1], one), (messages[3], two)):
        assert message["model"] == turn["model_used"]
        assert message["tokens"] == turn["tokens_used"]
    for message in (messages[0], messages[2]):
        assert message.get("model") is None
        assert message.get("tokens") is None


def test_read_of_a_session_without_system_prompt(client: httpx.Client, api_key: str) -> None:
    turn = chat(client, api_key, "no system prompt here")

    session = client.get(f"/sessions/{turn['session_id']}", headers=bearer(api_key)).json()

    assert session["system_prompt"] is None
    assert session["message_count"] == 2


def test_read_of_an_unknown_session_is_404(client: httpx.Client, api_key: str) -> None:
    response = client.get("/sessions/never-created", headers=bearer(api_key))

    assert_error(response, 404, "session_not_found")


# ---- DELETE /sessions/{id} -------------------------------------------------------------------


def test_delete_removes_every_key_and_index_entry(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    doomed = chat(client, api_key, "delete me")["session_id"]
    chat(client, api_key, "more", session_id=doomed)
    kept = chat(client, api_key, "keep me")["session_id"]
    assert session_keys(redis_client, doomed), "the session's keys exist before the delete"
    owner_indexes = list(redis_client.scan_iter(match="chat:owner:*:sessions"))
    assert any(redis_client.zscore(index, doomed) is not None for index in owner_indexes)

    response = client.delete(f"/sessions/{doomed}", headers=bearer(api_key))

    assert response.status_code == 204
    assert response.content == b""
    # Only the delete's tombstone is left, for a replay of it to know it, and it expires.
    [tombstone] = session_keys(redis_client, doomed)
    assert tombstone.endswith(b":deleted")
    assert 0 < cast("int", redis_client.pttl(tombstone)) <= 120_000
    assert redis_client.zscore("chat:sessions", ref(api_key, doomed)) is None
    for index in redis_client.scan_iter(match="chat:owner:*:sessions"):
        assert redis_client.zscore(index, doomed) is None
    gone = client.get(f"/sessions/{doomed}", headers=bearer(api_key))
    assert_error(gone, 404, "session_not_found")
    page = client.get("/sessions", headers=bearer(api_key)).json()
    assert [s["session_id"] for s in page["sessions"]] == [kept]
    assert page["total"] == 1
    # The other session of the same key is untouched.
    assert session_keys(redis_client, kept)
    assert client.get(f"/sessions/{kept}", headers=bearer(api_key)).status_code == 200


def test_second_delete_is_404(client: httpx.Client, api_key: str) -> None:
    session_id = chat(client, api_key, "delete me twice")["session_id"]
    assert client.delete(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 204

    response = client.delete(f"/sessions/{session_id}", headers=bearer(api_key))

    assert_error(response, 404, "session_not_found")


def test_deleted_session_id_starts_afresh(client: httpx.Client, api_key: str) -> None:
    session_id = chat(client, api_key, "old conversation")["session_id"]
    client.delete(f"/sessions/{session_id}", headers=bearer(api_key))

    turn = chat(client, api_key, "new conversation", session_id=session_id)

    # The stand-in counts the user messages it was sent: the old one is gone.
    assert turn["response"] == "Echo 1: new conversation"
    session = client.get(f"/sessions/{session_id}", headers=bearer(api_key)).json()
    assert session["title"] == "new conversation"
    assert session["message_count"] == 2


# ---- ownership -------------------------------------------------------------------------------


def test_another_key_gets_404_and_the_session_survives(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    turn = chat(client, api_key, "private matters")
    session_id = turn["session_id"]
    intruder = new_key()
    keys_before = session_keys(redis_client, session_id)

    read = client.get(f"/sessions/{session_id}", headers=bearer(intruder))
    removal = client.delete(f"/sessions/{session_id}", headers=bearer(intruder))

    # Indistinguishable from a session that does not exist.
    unknown = client.get("/sessions/does-not-exist", headers=bearer(intruder))
    for response in (read, removal):
        error = assert_error(response, 404, "session_not_found")
        assert "private matters" not in response.text
        assert error["message"].replace(session_id, "ID") == unknown.json()["error"][
            "message"
        ].replace("does-not-exist", "ID")
    assert session_keys(redis_client, session_id) == keys_before
    assert redis_client.zscore("chat:sessions", ref(api_key, session_id)) is not None
    own = client.get(f"/sessions/{session_id}", headers=bearer(api_key))
    assert own.status_code == 200
    assert [m["content"] for m in own.json()["messages"]] == ["private matters", turn["response"]]
    assert client.get("/sessions", headers=bearer(intruder)).json()["total"] == 0


# ---- bad input and auth ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    ["a" * 65, "dot.ted", "semi;colon", "caf%C3%A9", "sp%20ace", "star*", "%7Bbrace%7D"],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_invalid_session_id_in_path_is_400(
    client: httpx.Client, api_key: str, method: str, session_id: str
) -> None:
    response = client.request(method, f"/sessions/{session_id}", headers=bearer(api_key))

    error = assert_error(response, 400, "invalid_request")
    assert "session_id" in error["message"]


@pytest.mark.parametrize("session_id", ["a" * 64, "A-z_0-9"])
def test_session_id_at_the_pattern_limits_is_accepted(
    client: httpx.Client, api_key: str, session_id: str
) -> None:
    response = client.get(f"/sessions/{session_id}", headers=bearer(api_key))

    # Valid ids that were never created: 404, not 400.
    assert_error(response, 404, "session_not_found")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Token sk-or-v1-abc"},
        {"Authorization": "Bearer two words"},
    ],
    ids=["none", "basic", "scheme-only", "other-scheme", "spaces"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/sessions"), ("GET", "/sessions/some-id"), ("DELETE", "/sessions/some-id")],
)
def test_missing_or_malformed_auth_is_401(
    client: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(method, path, headers=headers)

    assert_error(response, 401, "unauthorized")


# ---- expiry ----------------------------------------------------------------------------------


@pytest.fixture
def short_lived_api(start_api: Callable[..., WebProcess]) -> WebProcess:
    """Sessions live 0.001 h = 3.6 s."""
    return start_api(SESSION_CLEANUP_HOURS="0.001")


def test_sessions_expire_after_cleanup_hours(
    short_lived_api: WebProcess, redis_client: redis.Redis, api_key: str
) -> None:
    ttl = timedelta(hours=0.001)
    with httpx.Client(base_url=short_lived_api.url, timeout=10) as http:
        started = time.monotonic()
        session_id = chat(http, api_key, "short-lived")["session_id"]
        session = http.get(f"/sessions/{session_id}", headers=bearer(api_key)).json()
        expires = when(session["expires_at"]) - when(session["updated_at"])
        assert abs(expires - ttl) < timedelta(seconds=1)
        for key in session_keys(redis_client, session_id):
            assert 0 < pttl(redis_client, key) <= ttl.total_seconds() * 1000

        deadline = started + 30
        while True:
            response = http.get(f"/sessions/{session_id}", headers=bearer(api_key))
            if response.status_code == 404:
                break
            assert response.status_code == 200
            assert time.monotonic() < deadline, "the session never expired"
            time.sleep(0.2)
        # Redis never expires early: the TTL, not something else, removed it.
        assert time.monotonic() - started >= ttl.total_seconds() - 0.5
        assert session_keys(redis_client, session_id) == set()
        page = http.get("/sessions", headers=bearer(api_key)).json()
        assert page["sessions"] == []
