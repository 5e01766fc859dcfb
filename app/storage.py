"""The Redis client: one bounded pool per process, with timeouts that fail fast."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from redis.asyncio.connection import AbstractConnection


class TurnPool(BlockingConnectionPool):
    """A bounded pool that hands out an idle connection at once.

    redis-py's blocking pool takes a lock, starts a timer and probes the socket for stray data
    on every command; with one event loop and nobody waiting, taking the last idle connection
    cannot race. A connection Redis closed in the meantime fails its command, and the client's
    retry reconnects. Only when the pool is used up do callers queue, in order, as before.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._waiting and self._available_connections:
            connection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            if not connection.is_connected:
                try:
                    await connection.connect()  # type: ignore[no-untyped-call]
                except BaseException:
                    await self.release(connection)
                    raise
            return connection
        self._waiting += 1
        try:
            waited: AbstractConnection = await super().get_connection()
        finally:
            self._waiting -= 1
        return waited

    async def release(self, connection: AbstractConnection) -> None:
        if self._waiting:
            await super().release(connection)  # wakes the next one in line
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


def hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class` packing commands with hiredis, in C, as redis-py's sync client does:
    the asyncio client packs in Python, a cost that grows with a script's arguments."""
    packer = HiredisRespSerializer()

    class HiredisPacking(connection_class):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            packed: list[bytes] = packer.pack(*args)
            return packed

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = connection_class.__name__
    return HiredisPacking


def create_redis(url: str, *, timeout_seconds: float, max_connections: int) -> Redis:
    """A client whose every call fails within about twice `timeout_seconds` when Redis is away.

    One retry covers a pooled connection that Redis closed (a restart, an idle timeout).
    Writes are single Lua scripts that detect their own replay, so the retry is safe for them.
    """
    pool = TurnPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        socket_keepalive=True,
        # No health_check_interval: redis-py 5.3 re-runs its health-check PING inside the retry
        # of a connect, so a frozen Redis would hang the call instead of failing it.
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=False,
    )
    # The URL picks the class (TCP, TLS for rediss://, a Unix socket): keep it, pack faster.
    pool.connection_class = hiredis_packing(pool.connection_class)
    # from_pool: closing the client closes the pool too.
    return Redis.from_pool(pool)


def lua_script(package: str, name: str, *, after: tuple[str, ...] = ()) -> str:
    """The text of a Lua script shipped in `<package>/lua/<name>`, behind the scripts of
    `after` (shared functions: Redis scripts cannot call one another)."""
    folder = files(package).joinpath("lua")
    return "".join(folder.joinpath(part).read_text(encoding="utf-8") for part in (*after, name))


async def awaited(command: Awaitable[Any] | Any) -> Any:
    """Await a redis-py asyncio command.

    Its stubs share the sync client's `Awaitable[T] | T` and assume decoded strings; callers
    annotate the bytes they really get.
    """
    return await cast("Awaitable[Any]", command)
