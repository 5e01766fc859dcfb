"""The Redis client's pool and packing (`app.store.client`), against a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import uvloop
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.store.client import BoundedRedis, LuaScript, create_redis, hiredis_packing


def standalone(url: str, *, timeout_seconds: float, max_connections: int) -> BoundedRedis:
    client = create_redis(url, timeout_seconds=timeout_seconds, max_connections=max_connections)
    assert isinstance(client, BoundedRedis)
    return client


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "chat:{s}:meta", b"\x00bytes\xff", 1700000000000, "", -1),
        ("SET", "clé", "valeur ünïcode"),
        ("CONFIG GET", "maxmemory"),
        ("RPUSH", "k", b"x" * 100_000),
    ],
)
def test_commands_pack_as_redis_py_packs_them(args: tuple[bytes | str | int, ...]) -> None:
    python = Connection()
    packed = hiredis_packing(Connection)()
    assert b"".join(packed.pack_command(*args)) == b"".join(python.pack_command(*args))


def test_callers_beyond_the_pool_wait_their_turn(redis_url: str) -> None:
    async def run() -> tuple[list[object], int]:
        client = standalone(redis_url, timeout_seconds=5, max_connections=2)
        try:
            # Each holds its connection for 0.2 s: ten of them need five rounds of two.
            held = [client.execute_command("BLPOP", "test:pool:empty", 0.2) for _ in range(10)]
            replies = await asyncio.gather(*held)
            in_use = len(client.connection_pool._in_use_connections)
            opened = len(client.connection_pool._available_connections) + in_use
            return replies, opened
        finally:
            await client.aclose()

    started = time.monotonic()
    replies, opened = asyncio.run(run())
    assert replies == [None] * 10
    assert opened == 2
    assert time.monotonic() - started >= 0.9


def test_a_caller_that_waits_too_long_is_refused(redis_url: str) -> None:
    async def run() -> None:
        client = standalone(redis_url, timeout_seconds=0.3, max_connections=1)
        script = LuaScript(client, "return 'served'")
        try:
            pool = client.connection_pool
            held = await pool.get_connection()
            with pytest.raises(RedisTimeoutError, match=r"within 0\.3 s"):
                await client.ping()
            with pytest.raises(RedisTimeoutError, match=r"within 0\.3 s"):
                await script(keys=[], args=[])
            await pool.release(held)
            assert await client.ping()  # and the pool works on
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_frozen_redis_fails_each_kind_of_call_within_the_deadline(redis_url: str) -> None:
    """A Redis that accepts connections and never answers (here a listener that reads and
    says nothing): commands, pipelines and scripts each fail within the deadline, and the
    connection they used is not handed out again half-read."""

    async def run() -> list[float]:
        silent = await asyncio.start_server(_swallow, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        client = standalone(f"redis://127.0.0.1:{port}", timeout_seconds=0.3, max_connections=2)
        script = LuaScript(client, "return 1")
        took: list[float] = []

        async def pipeline() -> object:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("a")
                pipe.get("b")
                return await pipe.execute()

        try:
            for call in (client.ping, pipeline, lambda: script(keys=[], args=[])):
                started = time.monotonic()
                with pytest.raises(RedisTimeoutError):
                    await call()
                took.append(time.monotonic() - started)
            idle = client.connection_pool._available_connections
            assert all(not connection.is_connected for connection in idle)
            return took
        finally:
            await client.aclose()
            silent.close()

    took = asyncio.run(run())
    assert all(0.25 < seconds < 1.0 for seconds in took), took


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass
    writer.close()


def test_a_connection_redis_closed_is_replaced(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    async def run() -> None:
        client = standalone(redis_url, timeout_seconds=2, max_connections=4)
        try:
            await client.set("test:pool:value", "before")
            admin.client_kill_filter(_type="normal", skipme=True)
            assert await client.get("test:pool:value") == b"before"
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        admin.close()


def test_callers_in_line_are_served_in_order_and_a_cancelled_one_loses_nothing(
    redis_url: str,
) -> None:
    async def run() -> tuple[list[int], int, int]:
        client = standalone(redis_url, timeout_seconds=5, max_connections=1)
        pool = client.connection_pool
        served: list[int] = []

        async def ping(n: int) -> None:
            await client.ping()
            served.append(n)

        try:
            held = await pool.get_connection()
            waiting = [asyncio.ensure_future(ping(n)) for n in range(4)]
            await asyncio.sleep(0.05)
            waiting[1].cancel()  # leaves the line while waiting
            await pool.release(held)
            await asyncio.gather(*waiting, return_exceptions=True)
            return served, len(pool._in_use_connections), len(pool._available_connections)
        finally:
            await client.aclose()

    served, in_use, idle = asyncio.run(run())
    assert served == [0, 2, 3]
    assert (in_use, idle) == (0, 1)


def test_a_script_redis_lost_is_loaded_again(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    async def run() -> list[object]:
        client = standalone(redis_url, timeout_seconds=2, max_connections=2)
        script = LuaScript(client, "return {KEYS[1], ARGV[1]}")
        try:
            first = await script(keys=["test:script:key"], args=["one"])
            admin.script_flush()
            again = await script(keys=["test:script:key"], args=["two"])
            return [first, again]
        finally:
            await client.aclose()

    try:
        assert asyncio.run(run()) == [[b"test:script:key", b"one"], [b"test:script:key", b"two"]]
    finally:
        admin.close()


def test_a_command_larger_than_the_socket_takes_at_once_is_sent_whole(redis_url: str) -> None:
    value = bytes(range(256)) * (64 * 1024)  # 16 MiB: the send waits for Redis to read

    async def run() -> bytes | None:
        client = standalone(redis_url, timeout_seconds=5, max_connections=1)
        try:
            await client.set("test:pool:large", value)
            stored: bytes | None = await client.get("test:pool:large")
            await client.delete("test:pool:large")
            return stored
        finally:
            await client.aclose()

    assert asyncio.run(run()) == value


def test_a_script_runs_on_over_a_connection_redis_closed(redis_url: str) -> None:
    admin = redis.Redis.from_url(redis_url)

    async def run() -> tuple[object, int]:
        client = standalone(redis_url, timeout_seconds=2, max_connections=2)
        script = LuaScript(client, "return ARGV[1]")
        try:
            await script(keys=[], args=["before"])
            admin.client_kill_filter(_type="normal", skipme=True)
            after = await script(keys=[], args=["after"])  # retried on a new connection
            return after, len(client.connection_pool._in_use_connections)
        finally:
            await client.aclose()

    try:
        assert asyncio.run(run()) == (b"after", 0)
    finally:
        admin.close()


def test_a_script_error_is_raised_and_its_connection_serves_the_next(redis_url: str) -> None:
    async def run() -> tuple[object, int]:
        client = standalone(redis_url, timeout_seconds=2, max_connections=1)
        failing = LuaScript(client, "return redis.error_reply('ERR refused by the script')")
        fine = LuaScript(client, "return 'served'")
        try:
            with pytest.raises(ResponseError, match="refused by the script"):
                await failing(keys=[], args=[])
            return await fine(keys=[], args=[]), len(client.connection_pool._in_use_connections)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (b"served", 0)


def test_a_connection_closed_while_held_serves_no_one_after(redis_url: str) -> None:
    """Redis closes a connection its caller still holds (CLIENT KILL, a restart): released,
    it is dropped, and the next caller gets one that works. Under uvloop, as the API runs, a
    write to the closed socket would raise a non-Redis error, which no retry covers."""

    async def run() -> tuple[object, object]:
        client = standalone(redis_url, timeout_seconds=1, max_connections=1)
        killer = redis.asyncio.Redis.from_url(redis_url)
        pool = client.connection_pool
        script = LuaScript(client, "return ARGV[1]")
        try:
            connection = await pool.get_connection()
            await connection.send_command("CLIENT", "ID")
            client_id = await connection.read_response()
            killed = await killer.execute_command("CLIENT", "KILL", "ID", client_id)
            await asyncio.sleep(0.2)  # the event loop sees the socket close
            await pool.release(connection)
            return killed, await script(keys=[], args=["next"])
        finally:
            await killer.aclose()
            await client.aclose()

    assert uvloop.run(run()) == (1, b"next")
