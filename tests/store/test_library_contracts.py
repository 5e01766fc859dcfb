"""What `app.store.client` leans on of redis-py beyond its public interface, checked against
the installed redis-py and a real Redis, so that an upgrade that changes it fails here, by name,
rather than somewhere in a turn.

- `ConnectionPool._available_connections` (a list) and `_in_use_connections` (a set): the
  pool hands out and takes back connections itself (`TurnPool`) without redis-py's lock and
  timer per command.
- `redis.connection.HiredisRespSerializer`: packs commands in C for the asyncio client.
- A connection whose read is cancelled disconnects itself: `BoundedRedis` and `LuaScript`
  cancel a call at its deadline, and the connection goes back to the pool without a reply
  still on its way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import Connection
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


def test_a_connection_cancelled_in_the_middle_of_a_read_disconnects() -> None:
    async def run() -> bool:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65536):
                pass
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # No CLIENT SETINFO at connect: this server never answers.
        connection = Connection(host="127.0.0.1", port=port, lib_name=None, lib_version=None)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_packed_command(connection.pack_command("PING"))
            reading = asyncio.ensure_future(connection.read_response())
            await asyncio.sleep(0.05)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            return bool(connection.is_connected)
        finally:
            await connection.disconnect()
            server.close()

    assert asyncio.run(run()) is False, f"{WHO}: a cancelled read leaves the connection open"
