"""/admin: present only with ADMIN_TOKEN, guarded by it, and consistent with the Redis keys."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest

from tests.conftest import Store, base_env, bearer
from tests.e2e.test_worker import (
    WorkerPool,
    chat,
    owner_of,
    session_keys,
    session_usage,
    wait_for,
)
from tests.support.processes import WebProcess
from tests.support.redis_server import free_port
from tests.support.redis_state import layout_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis

    from tests.standin import StandinServer

pytestmark = pytest.mark.stores("standalone", "cluster")

TOKEN = "admin-" + secrets.token_hex(16)
ROUTES = [
    ("GET", "/admin/sessions"),
    ("GET", f"/admin/sessions/{'0' * 32}/some-session"),
    ("DELETE", f"/admin/sessions/{'0' * 32}/some-session"),
    ("GET", "/admin/stats"),
]


@pytest.fixture(scope="module")
def admin_api(store: Store, standin: StandinServer) -> Iterator[WebProcess]:
    """The API with ADMIN_TOKEN set; shared by this module's tests."""
    with WebProcess({**base_env(store, standin), "ADMIN_TOKEN": TOKEN}, free_port()) as web:
        yield web


@pytest.fixture
def admin(admin_api: WebProcess, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    """A client on the admin-enabled API; Redis is empty at the start of each test."""
    with httpx.Client(base_url=admin_api.url, timeout=30) as http:
        yield http


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-" + TOKEN),
        bearer(TOKEN[:-1]),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "truncated", "basic-scheme", "no-scheme"],
)
def test_admin_routes_refuse_a_missing_or_wrong_token(
    admin: httpx.Client, headers: dict[str, str]
) -> None:
    for method, path in ROUTES:
        response = admin.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["status"] == 401


def test_admin_routes_accept_the_token(admin: httpx.Client) -> None:
    assert admin.get("/admin/sessions", headers=bearer(TOKEN)).status_code == 200
    assert admin.get("/admin/stats", headers=bearer(TOKEN)).status_code == 200
    # Past the guard: an unknown session is a 404, not a 401.
    unknown = f"/admin/sessions/{'0' * 32}/some-session"
    assert admin.get(unknown, headers=bearer(TOKEN)).status_code == 404
    assert admin.delete(unknown, headers=bearer(TOKEN)).status_code == 404


def test_a_users_key_is_not_an_admin_token(
    admin: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    session_id = chat(admin, api_key, "mine")["session_id"]
    owner = owner_of(redis_client, session_id)
    response = admin.delete(f"/admin/sessions/{owner}/{session_id}", headers=bearer(api_key))
    assert response.status_code == 401
    assert redis_client.exists(f"chat:{{{owner}:{session_id}}}:meta") == 1


def test_admin_lists_every_owners_sessions_by_last_activity(
    admin: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    other_key = api_key[:-4] + "beef"
    first = chat(admin, api_key, "first")["session_id"]
    second = chat(admin, other_key, "second")["session_id"]
    third = chat(admin, api_key, "third")["session_id"]
    # The second session's new turn makes it the most recently active.
    chat(admin, other_key, "second again", session_id=second)

    page = admin.get("/admin/sessions", headers=bearer(TOKEN)).json()
    assert [s["session_id"] for s in page["sessions"]] == [second, third, first]
    assert page["total"] == 3
    owners = {s["session_id"]: s["owner"] for s in page["sessions"]}
    assert owners[first] == owners[third] != owners[second]
    for summary in page["sessions"]:
        # The owner shown is the one in the key an operator reads with redis-cli.
        index = layout_for(redis_client).owner_sessions(summary["owner"])
        assert redis_client.zscore(index, summary["session_id"]) is not None
        assert summary["owner"] == owner_of(redis_client, summary["session_id"])
    assert page["sessions"][0]["message_count"] == 4

    # Paginated like the owners' listing.
    head = admin.get("/admin/sessions?limit=2", headers=bearer(TOKEN)).json()
    assert [s["session_id"] for s in head["sessions"]] == [second, third]
    assert head["next_offset"] == 2
    tail = admin.get("/admin/sessions?limit=2&offset=2", headers=bearer(TOKEN)).json()
    assert [s["session_id"] for s in tail["sessions"]] == [first]
    assert tail["next_offset"] is None


def test_admin_reads_any_session(
    admin: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    session_id = chat(admin, api_key, "hello", system_prompt="Be brief.")["session_id"]
    chat(admin, api_key, "more", session_id=session_id)
    own: dict[str, Any] = admin.get(f"/sessions/{session_id}", headers=bearer(api_key)).json()

    owner = owner_of(redis_client, session_id)
    response = admin.get(f"/admin/sessions/{owner}/{session_id}", headers=bearer(TOKEN))
    assert response.status_code == 200
    detail: dict[str, Any] = response.json()
    assert detail.pop("owner") == owner_of(redis_client, session_id)
    assert detail.pop("expires_at") and own.pop("expires_at")
    assert detail == own
    assert [m["content"] for m in detail["messages"]] == [
        "hello", "Echo 1: hello", "more", "Echo 2: more"
    ]  # fmt: skip


def test_admin_delete_removes_every_key_and_index_entry(
    admin: httpx.Client,
    api_key: str,
    redis_client: redis.Redis,
    store: Store,
    standin: StandinServer,
) -> None:
    doomed = chat(admin, api_key, "to delete")["session_id"]
    kept = chat(admin, api_key, "to keep")["session_id"]
    owner = owner_of(redis_client, doomed)
    # A worker adds the usage hash, so all four keys of the session exist.
    with WorkerPool(base_env(store, standin)) as pool:
        pool.start()
        wait_for(
            lambda: session_usage(admin, api_key, doomed)["turns"] == 1,
            timeout=5,
            what="the usage hash written",
        )
    assert len(session_keys(redis_client, doomed)) == 4

    response = admin.delete(f"/admin/sessions/{owner}/{doomed}", headers=bearer(TOKEN))
    assert response.status_code == 204
    # Only the delete's tombstone is left, for a replay of it to know it, and it expires.
    [tombstone] = session_keys(redis_client, doomed)
    assert tombstone.endswith(b":deleted")
    assert 0 < cast("int", redis_client.pttl(tombstone)) <= 120_000
    layout = layout_for(redis_client)
    assert redis_client.zscore(layout.shard(owner).all_sessions, f"{owner}:{doomed}") is None
    assert redis_client.zscore(layout.owner_sessions(owner), doomed) is None
    assert admin.get(f"/sessions/{doomed}", headers=bearer(api_key)).status_code == 404
    path = f"/admin/sessions/{owner}/{doomed}"
    assert admin.get(path, headers=bearer(TOKEN)).status_code == 404
    assert admin.delete(path, headers=bearer(TOKEN)).status_code == 404
    # The owner's other session is untouched.
    listing = admin.get("/sessions", headers=bearer(api_key)).json()
    assert [s["session_id"] for s in listing["sessions"]] == [kept]


def test_admin_routes_exist_only_with_admin_token(
    client: httpx.Client, admin: httpx.Client
) -> None:
    for method, path in ROUTES:
        response = client.request(method, path, headers=bearer(TOKEN))
        assert response.status_code == 404, (method, path, response.text)
    documented = client.get("/openapi.json").json()["paths"]
    assert not [path for path in documented if path.startswith("/admin")]
    # With the token set, the same document lists them.
    with_admin = admin.get("/openapi.json").json()["paths"]
    assert {"/admin/sessions", "/admin/stats"} <= with_admin.keys()
