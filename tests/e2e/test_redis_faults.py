"""Redis slow (DEBUG SLEEP) or out of memory (maxmemory, noeviction): clear errors in time,
no half turns, and recovery without restarting the API.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.client import create_redis
from tests.conftest import bearer
from tests.e2e.test_redis_outage import (
    BOUND_SECONDS,
    assert_storage_unavailable,
    wait_until_healthy,
)
from tests.support.redis_server import RedisServer
from tests.support.redis_state import broken_turns, stored_messages

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

SLEEP_SECONDS = 4


class DebuggableRedisServer(RedisServer):
    """A server that accepts DEBUG from loopback (Redis 7 refuses it by default)."""

    options = ("--enable-debug-command", "local")


@pytest.fixture
def own_redis() -> Iterator[DebuggableRedisServer]:
    with DebuggableRedisServer() as server:
        yield server


@pytest.fixture
def store(own_redis: DebuggableRedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=own_redis.port)
    yield client
    client.close()


@pytest.fixture
def http(
    own_redis: DebuggableRedisServer, start_api: Callable[..., WebProcess]
) -> Iterator[httpx.Client]:
    web = start_api(REDIS_URL=own_redis.url)
    with httpx.Client(base_url=web.url, timeout=BOUND_SECONDS + SLEEP_SECONDS + 10) as client:
        yield client


def chat(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json=body, headers=bearer(key))


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def put_to_sleep(port: int, seconds: float) -> threading.Thread:
    """DEBUG SLEEP on a connection of its own: the whole server stops answering meanwhile."""

    def sleep() -> None:
        with redis.Redis(port=port, socket_timeout=seconds + 10) as sleeper:
            sleeper.execute_command("DEBUG", "SLEEP", seconds)

    thread = threading.Thread(target=sleep)
    thread.start()
    time.sleep(0.2)  # the command has reached the server
    return thread


def test_slow_redis_gets_503_within_the_bound_and_recovers(
    http: httpx.Client, own_redis: DebuggableRedisServer, store: redis.Redis, api_key: str
) -> None:
    first = chat(http, api_key, message="before the slowness")
    assert first.status_code == 200
    session_id = first.json()["session_id"]

    sleeper = put_to_sleep(own_redis.port, SLEEP_SECONDS)
    try:
        calls = {
            "continue": lambda: chat(http, api_key, message="slow?", session_id=session_id),
            "read": lambda: http.get(f"/sessions/{session_id}", headers=bearer(api_key)),
            "list": lambda: http.get("/sessions", headers=bearer(api_key)),
        }
        for name, call in calls.items():
            response, elapsed = timed(call)
            assert_storage_unavailable(response)
            assert elapsed < BOUND_SECONDS, f"{name} took {elapsed:.2f} s"
    finally:
        sleeper.join()

    wait_until_healthy(http)
    after = chat(http, api_key, message="after the slowness", session_id=session_id)
    assert after.status_code == 200, after.text
    assert broken_turns(store) == []
    contents = [m["content"] for m in stored_messages(store, session_id)][::2]
    assert contents == ["before the slowness", "after the slowness"]


def test_a_command_redis_does_not_read_fails_within_the_bound(
    own_redis: DebuggableRedisServer,
) -> None:
    """A send the socket cannot take at once waits for Redis to read it, within the timeout:
    a sleeping Redis fails the command before it wakes up."""
    value = b"x" * (64 * 1024 * 1024)  # far more than loopback's socket buffers hold

    async def run() -> float:
        client = create_redis(own_redis.url, timeout_seconds=0.5, max_connections=2)
        try:
            await client.ping()
            sleeper = put_to_sleep(own_redis.port, SLEEP_SECONDS)
            started = time.monotonic()
            with pytest.raises(RedisError):
                await client.set("test:faults:large", value)
            elapsed = time.monotonic() - started
            await asyncio.to_thread(sleeper.join)
            await asyncio.sleep(0.2)  # the dropped connection's buffer drains as Redis wakes
            return elapsed
        finally:
            await client.aclose()

    assert asyncio.run(run()) < SLEEP_SECONDS - 1


def test_a_read_redis_does_not_answer_in_time_fails_and_the_next_is_served(
    own_redis: DebuggableRedisServer,
) -> None:
    """The call's deadline cuts a read Redis does not answer, also after a quiet spell; the
    connection it cut is dropped, and the next call is served on a fresh one."""

    async def run() -> tuple[float, bytes | None]:
        client = create_redis(own_redis.url, timeout_seconds=0.3, max_connections=2)
        try:
            await client.set("test:faults:key", "value")
            await asyncio.sleep(0.5)  # nothing held: the watch stops
            sleeper = put_to_sleep(own_redis.port, 2)
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError, match=r"did not answer within 0\.3 s"):
                await client.get("test:faults:key")
            elapsed = time.monotonic() - started
            await asyncio.to_thread(sleeper.join)
            return elapsed, await client.get("test:faults:key")
        finally:
            await client.aclose()

    elapsed, after = asyncio.run(run())
    assert elapsed < 1.0
    assert after == b"value"


def test_redis_slow_at_commit_time_leaves_whole_turns_only(
    http: httpx.Client,
    own_redis: DebuggableRedisServer,
    store: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    first = chat(http, api_key, message="the first turn")
    assert first.status_code == 200
    session_id = first.json()["session_id"]
    # Redis falls asleep while OpenRouter is answering: the commit meets a silent server.
    standin.control.script(api_key, {"delay": 1.0})
    result: dict[str, httpx.Response] = {}
    sender = threading.Thread(
        target=lambda: result.update(
            r=chat(http, api_key, message="the slow commit", session_id=session_id)
        )
    )
    sender.start()
    deadline = time.monotonic() + 10
    while len(standin.control.requests(api_key)) < 2:
        assert time.monotonic() < deadline, "the turn never reached upstream"
        time.sleep(0.01)
    sleeper = put_to_sleep(own_redis.port, SLEEP_SECONDS)
    sender.join()
    sleeper.join()

    response = result["r"]
    assert_storage_unavailable(response)
    wait_until_healthy(http)
    # The commit's script may have run once Redis woke up (it was already sent): then the
    # turn is whole, and once. Either way nothing is half there.
    assert broken_turns(store) == []
    contents = [m["content"] for m in stored_messages(store, session_id)][::2]
    assert contents in (["the first turn"], ["the first turn", "the slow commit"])
    following = chat(http, api_key, message="the next turn", session_id=session_id)
    assert following.status_code == 200, following.text
    assert broken_turns(store) == []


def fill_to_the_limit(store: redis.Redis) -> None:
    """maxmemory just above what is used now, and no eviction: writes are soon refused."""
    memory: Any = store.info("memory")
    used = int(memory["used_memory"])
    store.config_set("maxmemory-policy", "noeviction")
    store.config_set("maxmemory", str(used + 64 * 1024))
    ballast = b"x" * 16 * 1024
    for n in range(64):
        try:
            store.set(f"ballast:{n}", ballast)
        except redis.exceptions.OutOfMemoryError:
            return
    raise AssertionError("Redis never refused a write")


def test_redis_out_of_memory_refuses_turns_whole_and_recovers(
    http: httpx.Client, store: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    first = chat(http, api_key, message="before memory ran out", system_prompt="Be brief.")
    assert first.status_code == 200
    session_id = first.json()["session_id"]
    fill_to_the_limit(store)

    for body in ({"message": "continue?", "session_id": session_id}, {"message": "new?"}):
        response = chat(http, api_key, **body)
        assert_storage_unavailable(response)
        assert "full" in response.json()["error"]["message"]
    streamed = chat(http, api_key, message="a stream?", session_id=session_id, stream=True)
    # Refused before it starts where the rate limit's admission (a write) is refused, else
    # ended by an error event when its turn cannot be saved.
    if streamed.status_code == 200:
        last = json.loads(streamed.text.strip().rsplit("data: ", 1)[1])
        assert last["type"] == "error"
        assert last["error"]["type"] == "storage_unavailable"
        assert "full" in last["error"]["message"]
    else:
        assert_storage_unavailable(streamed)
        assert "full" in streamed.json()["error"]["message"]
    # What is stored can still be read.
    read = http.get(f"/sessions/{session_id}", headers=bearer(api_key))
    assert read.status_code == 200
    assert read.json()["message_count"] == 2
    assert broken_turns(store) == []

    store.config_set("maxmemory", "0")
    after = chat(http, api_key, message="memory is back", session_id=session_id)
    assert after.status_code == 200, after.text
    contents = [m["content"] for m in stored_messages(store, session_id)][::2]
    assert contents == ["before memory ran out", "memory is back"]
    assert broken_turns(store) == []
