"""What `app.store.client` leans on of redis-py beyond its public interface, checked against
the installed redis-py and a real Redis, so that an upgrade that changes it fails here, by name,
rather than somewhere in a turn.

- `ConnectionPool._available_connections` (a list) and `_in_use_connections` (a set): the
  pool hands out and takes back connections itself (`TurnPool`) without redis-py's lock and
  timer per command.
- `redis.connection.HiredisRespSerializer`: packs commands in C for the asyncio client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from redis.asyncio import ConnectionPool
from redis.connection import HiredisRespSerializer

WHO = f"redis-py {redis.__version__}"


def test_the_pool_keeps_its_idle_and_held_connections_where_turn_pool_reads_them(
    redis_url: str,
) -> None:
    async def run() -> None:
        pool = ConnectionPool.from_url(redis_url, max_connections=2)
        try:
            assert isinstance(pool._available_connections, list), f"{WHO}: _available_connections"
            assert isinstance(pool._in_use_connections, set), f"{WHO}: _in_use_connections"
            connection = await pool.get_connection()
            assert connection in pool._in_use_connections, f"{WHO}: a held connection's place"
            await pool.release(connection)
            assert pool._available_connections == [connection], f"{WHO}: an idle one's place"
            assert connection not in pool._in_use_connections, f"{WHO}: release"
        finally:
            await pool.disconnect()

    asyncio.run(run())


def test_hiredis_packs_commands() -> None:
    command: tuple[Any, ...] = ("SET", "k", b"v")
    packed = HiredisRespSerializer().pack(*command)
    assert b"".join(packed) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", WHO
