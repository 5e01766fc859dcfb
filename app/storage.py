"""The Redis client: one bounded pool per process, with timeouts that fail fast."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from importlib.resources import files
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Sequence

    from redis.asyncio.connection import AbstractConnection


class TurnPool(ConnectionPool):
    """A bounded pool: an idle connection is handed out at once; callers beyond
    `max_connections` wait in line, each at most `timeout` seconds.

    redis-py's blocking pool takes a lock, starts a timer and probes the socket for stray data
    on every command, and wakes its waiters through a condition. With one event loop, taking
    an idle connection cannot race, and a released connection goes straight to the first
    caller in line. A connection Redis closed in the meantime fails its command, and the
    client's retry reconnects.
    """

    def __init__(self, *, timeout: float | None = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._line: deque[asyncio.Future[AbstractConnection]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._available_connections and not self._line:
            connection = self._available_connections.pop()
        elif len(self._in_use_connections) < self.max_connections and not self._line:
            connection = self.make_connection()  # type: ignore[no-untyped-call]
        else:
            return await self._connected(await self._wait_in_line())
        self._in_use_connections.add(connection)
        return await self._connected(connection)

    async def _connected(self, connection: AbstractConnection) -> AbstractConnection:
        if not connection.is_connected:
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def _wait_in_line(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._line.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                connection = await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                await self.release(waiter.result())  # handed over as the wait ended: pass it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError("No connection available.") from None
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(connection)  # stays in use, by the next in line
                return
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)


def turn_connection(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """`connection_class`, cheaper per command on the hot path:

    - Commands are packed by hiredis, in C, as redis-py's sync client does: the asyncio client
      packs in Python, a cost that grows with a script's arguments.
    - A command the socket takes at once is sent without a timer. redis-py bounds every send
      with `asyncio.wait_for`, a task and a timer per command, though a send only waits when
      Redis reads slower than we write; then, and only then, the bounded wait is redis-py's.
    """
    packer = HiredisRespSerializer()

    class TurnConnection(connection_class):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            packed: list[bytes] = packer.pack(*args)
            return packed

        async def send_packed_command(
            self, command: bytes | str | Iterable[bytes], check_health: bool = True
        ) -> None:
            writer = self._writer
            if (
                writer is not None
                and self.is_connected
                and isinstance(command, list)
                and not self.health_check_interval
            ):
                try:
                    writer.writelines(command)
                except Exception:  # noqa: S110 - a closed transport: redis-py's errors follow
                    pass
                else:
                    if not writer.transport.get_write_buffer_size():
                        return  # all of it is with the kernel
                    command = []  # written; left is waiting for the buffer to drain
            await super().send_packed_command(command, check_health)

    TurnConnection.__name__ = TurnConnection.__qualname__ = connection_class.__name__
    return TurnConnection


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
    pool.connection_class = turn_connection(pool.connection_class)
    # from_pool: closing the client closes the pool too.
    return Redis.from_pool(pool)


class LuaScript:
    """A Lua script run by EVALSHA, and loaded again when Redis lost it (a restart).

    What `Redis.register_script` gives, without its per-call check of whether the client is a
    pipeline, which is a slow `isinstance` against redis-py's protocol classes.
    """

    def __init__(self, redis: Redis, text: str) -> None:
        self._redis = redis
        self._text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[str | bytes | int]) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]
        except NoScriptError:
            await self._redis.execute_command("SCRIPT LOAD", self._text)  # type: ignore[no-untyped-call]
            return await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]


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
