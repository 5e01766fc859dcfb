"""Storage one caller cannot grow without bound: sessions per owner, eviction from the owners
holding the most, and the size of everything a session stores, on every route."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, bearer
from tests.e2e.test_pruning import PRUNE_EVERY_SECOND, indexed_ids, reports_so_far, total
from tests.e2e.test_pruning import start_worker as start_worker  # the fixture
from tests.e2e.test_worker import chat, members, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from tests.e2e.test_worker import StartWorker
    from tests.standin import StandinServer
    from tests.support.processes import WebProcess


def new_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


def sessions_of(r: redis.Redis, key: str) -> list[str]:
    """The owner's session ids, least recently active first."""
    return members(r, f"chat:owner:{owner_id(key, SESSION_SECRET.encode())}:sessions")


def test_an_owner_beyond_max_sessions_per_owner_loses_its_oldest_sessions_only(
    client: httpx.Client, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    busy, quiet = new_key(), new_key()
    kept_quiet = [chat(client, quiet, f"quiet {n}")["session_id"] for n in range(2)]
    made = [chat(client, busy, f"busy {n}")["session_id"] for n in range(5)]

    worker = start_worker(MAX_SESSIONS_PER_OWNER="3", **PRUNE_EVERY_SECOND)
    wait_for(
        lambda: sessions_of(redis_client, busy) == made[2:],
        timeout=5,
        what="the busy owner down to its 3 most recent sessions",
    )
    assert sessions_of(redis_client, quiet) == kept_quiet
    for session_id in made[:2]:
        assert client.get(f"/sessions/{session_id}", headers=bearer(busy)).status_code == 404
    assert total(reports_so_far(worker), "evicted_over_owner_cap") == 2


def test_max_sessions_evicts_from_the_owners_holding_the_most_first(
    client: httpx.Client, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    # The quiet owner's sessions are the least recently active of all: eviction by age
    # alone would take them first.
    hoarder, quiet = new_key(), new_key()
    kept_quiet = [chat(client, quiet, f"quiet {n}")["session_id"] for n in range(2)]
    time.sleep(0.01)
    hoarded = [chat(client, hoarder, f"hoard {n}")["session_id"] for n in range(5)]

    worker = start_worker(MAX_SESSIONS="4", **PRUNE_EVERY_SECOND)
    wait_for(lambda: redis_client.zcard("chat:sessions") == 4, timeout=5, what="4 sessions left")

    assert sessions_of(redis_client, quiet) == kept_quiet
    assert sessions_of(redis_client, hoarder) == hoarded[3:]
    assert sorted(indexed_ids(redis_client)) == sorted(kept_quiet + hoarded[3:])
    assert total(reports_so_far(worker), "evicted") == 3


@pytest.fixture
def small(start_api: Callable[..., WebProcess]) -> Iterator[httpx.Client]:
    web = start_api(
        MAX_MESSAGE_CHARS="100", MAX_SYSTEM_PROMPT_CHARS="100", MAX_STORED_MESSAGE_BYTES="2048"
    )
    with httpx.Client(base_url=web.url, timeout=30) as http:
        yield http


def v1(
    http: httpx.Client, key: str, messages: list[dict[str, Any]], **headers: str
) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        json={"messages": messages},
        headers={**bearer(key), **headers},
    )


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}}


def stored(http: httpx.Client, key: str, messages: list[dict[str, Any]]) -> httpx.Response:
    """A /v1 turn of a new session: its messages are stored."""
    return v1(http, key, messages, **{"X-Session-Id": "new"})


LONG, USER = "x" * 101, {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("send", "field"),
    [
        (lambda h, k: chat_raw(h, k, message="hi", system_prompt=LONG), "system_prompt"),
        (lambda h, k: chat_raw(h, k, message=LONG), "message"),
        (lambda h, k: stored(h, k, [{"role": "system", "content": LONG}, USER]), "messages"),
        (lambda h, k: stored(h, k, [{"role": "user", "content": LONG}]), "messages[0].content"),
        (
            lambda h, k: stored(h, k, [{"role": "user", "content": [IMAGE]}]),
            "messages[0]",
        ),
        (
            lambda h, k: stored(
                h, k, [USER, {"role": "tool", "tool_call_id": "c1", "content": LONG}]
            ),
            "messages[1].content",
        ),
    ],
)
def test_what_a_session_would_store_beyond_its_limits_is_refused_before_the_call(
    small: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    send: Callable[[httpx.Client, str], httpx.Response],
    field: str,
) -> None:
    key = new_key()
    answer = send(small, key)

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.get("field", error.get("param")) == field
    assert standin.control.requests(key) == []
    assert not redis_client.keys("chat:{*")


def chat_raw(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json=body, headers=bearer(key))


def test_a_pass_through_stores_nothing_and_is_bound_by_the_body_size_only(
    small: httpx.Client, standin: StandinServer
) -> None:
    key = new_key()
    answer = v1(small, key, [{"role": "user", "content": [{"type": "text", "text": "see"}, IMAGE]}])

    assert answer.status_code == 200, answer.text
    assert len(standin.control.requests(key)) == 1
