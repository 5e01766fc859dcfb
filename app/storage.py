"""The Redis client: one bounded pool per process, with timeouts that fail fast."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable


def create_redis(url: str, *, timeout_seconds: float, max_connections: int) -> Redis:
    """A client whose every call fails within about twice `timeout_seconds` when Redis is away.

    One retry covers a pooled connection that Redis closed (a restart, an idle timeout).
    Writes are single Lua scripts that detect their own replay, so the retry is safe for them.
    """
    pool = BlockingConnectionPool.from_url(
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
