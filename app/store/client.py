"""The Redis client: one bounded pool per process, with timeouts that fail fast."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.clock import DAY_MS
from app.schemas import MAX_COST_PER_CALL, MAX_TOKENS_PER_CALL
from app.store import keys
from app.store.spend import HOLD_MS, PROMPT_BYTES_PER_TOKEN, SETTLED_MS

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from redis.asyncio.connection import AbstractConnection

T = TypeVar("T")


class TurnPool(ConnectionPool):
    """A bounded pool: an idle connection is handed out at once; callers beyond
    `max_connections` wait in line, each at most `timeout` seconds.

    redis-py's blocking pool takes a lock, starts a timer and probes the socket for stray data
    on every command, and wakes its waiters through a condition. With one event loop, taking
    an idle connection cannot race, and a released connection goes straight to the first
    caller in line. A connection Redis closed in the meantime fails its command, and the
    client's retry reconnects. The wait in line is bounded by the caller's deadline
    (`BoundedRedis`, `LuaScript`), as are the send and the read.
    """

    def __init__(
        self,
        *,
        connection_class: type[AbstractConnection] = Connection,
        **kwargs: Any,
    ) -> None:
        # The class the URL picked (TCP, TLS for rediss://, a Unix socket), packing faster.
        super().__init__(connection_class=hiredis_packing(connection_class), **kwargs)
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
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                await self.release(waiter.result())  # handed over as the wait ended: pass it on
            else:
                waiter.cancel()
            raise

    async def release(self, connection: AbstractConnection) -> None:
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(connection)  # stays in use, by the next in line
                return
        self._in_use_connections.discard(connection)
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


def create_redis(
    url: str, *, timeout_seconds: float, max_connections: int, cluster: bool = False
) -> StoreRedis:
    """A client whose every call fails within `timeout_seconds` when Redis is away.

    One retry covers a pooled connection that Redis closed (a restart, an idle timeout).
    Writes are Lua scripts that detect their own replay, so the retry is safe for them.
    With `cluster`, `url` names one or more nodes of a Redis Cluster, comma-separated.
    """
    options: dict[str, Any] = {
        # No socket_timeout: each call has one deadline instead (`BoundedRedis`).
        "socket_connect_timeout": timeout_seconds,
        "socket_keepalive": True,
        # No health_check_interval: redis-py 5.3 re-runs its health-check PING inside the
        # retry of a connect, so a frozen Redis would hang the call instead of failing it.
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "decode_responses": False,
    }
    if cluster:
        return cluster_client(url, timeout_seconds, max_connections, options)
    pool = TurnPool.from_url(url, max_connections=max_connections, **options)
    client = BoundedRedis(connection_pool=pool)
    client.deadline_seconds = timeout_seconds
    client.wait_timeout_ms = wait_ms(timeout_seconds)
    client.auto_close_connection_pool = True  # closing the client closes the pool too
    return client


def cluster_client(
    urls: str, timeout_seconds: float, max_connections: int, options: dict[str, Any]
) -> BoundedRedisCluster:
    """redis-py's cluster client (its slot map, MOVED and ASK, its retries), starting from
    every node `urls` names; credentials and TLS come from the first."""
    first, *others = (part.strip() for part in urls.split(",") if part.strip())
    startup = [ClusterNode(*_host_port(other)) for other in others]
    client: BoundedRedisCluster = BoundedRedisCluster.from_url(
        first,
        startup_nodes=startup,
        max_connections=max_connections,
        # Each send and read bounded by redis-py too: a cluster pipeline cancelled in the
        # middle of a read keeps its connection out of the node's pool for good, one that
        # times out gives it back. The deadline stays, as the bound of the whole call.
        socket_timeout=timeout_seconds,
        **options,
    )
    client.deadline_seconds = timeout_seconds * CLUSTER_DEADLINES
    client.wait_timeout_ms = wait_ms(timeout_seconds)
    return client


# A cluster call's deadline, in socket timeouts: a MOVED, a retry and the reply fit in it.
CLUSTER_DEADLINES = 3


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlsplit(url if "://" in url else f"redis://{url}")
    return parsed.hostname or "localhost", parsed.port or 6379


async def within(seconds: float, call: Awaitable[T]) -> T:
    """`call`, or redis-py's `TimeoutError` once `seconds` have passed. Cancelled in the
    middle of a send or a read, redis-py drops the connection, so none is reused half-read."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise RedisTimeoutError(f"Redis did not answer within {seconds:g} s") from None
    except (RuntimeError, AttributeError, RedisClusterException) as exc:
        if not _connection_lost(exc):
            raise
        raise RedisConnectionError(f"the connection to Redis was lost: {exc}") from exc


def _connection_lost(exc: Exception) -> bool:
    """Whether `exc` is a connection lost in the middle of a call, which redis-py does not
    make a ConnectionError: uvloop refuses a write on a socket Redis closed with a
    RuntimeError (asyncio raises an OSError); the cluster client, when it loses a node,
    closes every connection at once, in-flight calls' included, whose next step then finds
    no socket, and may find no node to learn the new map from while the cluster fails over."""
    text = str(exc)
    if isinstance(exc, RuntimeError):
        return "closed" in text
    if isinstance(exc, AttributeError):
        return "'NoneType' object has no attribute" in text
    return "connect" in text


class BoundedRedis(Redis):
    """redis-py's client, each command and each pipeline bounded by one deadline.

    Replaces redis-py's socket timeout, which puts each send in `asyncio.wait_for` (a task of
    its own on Python 3.11) and each read in a timeout of its own: 11%, 8% and 4% of a turn's
    CPU at 1, 8 and 32 connections in the repo's benchmark.
    """

    deadline_seconds: float = 1.0
    wait_timeout_ms: int = 500

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await within(self.deadline_seconds, call)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = BoundedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.deadline_seconds = self.deadline_seconds
        return pipe


class BoundedPipeline(Pipeline):
    """A pipeline of `BoundedRedis`: its whole execution within the client's deadline."""

    deadline_seconds: float = 1.0

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await within(self.deadline_seconds, super().execute(raise_on_error))


class BoundedRedisCluster(RedisCluster):
    """redis-py's cluster client, each command and each pipeline bounded by one deadline, as
    `BoundedRedis` is."""

    deadline_seconds: float = 1.0
    wait_timeout_ms: int = 500

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await within(self.deadline_seconds, super().execute_command(*args, **kwargs))

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe = BoundedClusterPipeline(self)  # type: ignore[abstract]
        pipe.deadline_seconds = self.deadline_seconds
        return pipe


class BoundedClusterPipeline(ClusterPipeline):
    """A pipeline of `BoundedRedisCluster`: each node's commands in one round trip, all
    nodes at once, within the client's deadline."""

    deadline_seconds: float = 1.0

    async def __aenter__(self) -> BoundedClusterPipeline:
        # Entering may learn the cluster's map first: a call to Redis like any other.
        await within(self.deadline_seconds, super().__aenter__())
        return self

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        call = super().execute(raise_on_error, allow_redirections)
        return await within(self.deadline_seconds, call)


# The client of the store: one Redis, or a Redis Cluster.
StoreRedis: TypeAlias = BoundedRedis | BoundedRedisCluster


def layout_of(redis: StoreRedis) -> keys.Layout:
    """The key layout of the store `redis` is (app.store.keys.Layout)."""
    return keys.CLUSTER if isinstance(redis, RedisCluster) else keys.STANDALONE


class LuaScript:
    """A Lua script run by EVALSHA, and loaded again when Redis lost it (a restart).

    What `Redis.register_script` gives, without its per-call check of whether the client is a
    pipeline, which is a slow `isinstance` against redis-py's protocol classes.
    """

    def __init__(self, redis: StoreRedis, text: str) -> None:
        self._redis = redis
        self._text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, *, keys: Sequence[str], args: Sequence[str | bytes | int], replicas: int = 0
    ) -> Any:
        """The script's reply. With `replicas`, once that many replicas have its writes
        (`WAIT`, on the same connection, in the same round trip), else `NotReplicated`."""
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._run(command, keys[0] if keys else "", replicas)
        except NoScriptError:
            # On a cluster, redis-py loads it on every master.
            await self._redis.execute_command("SCRIPT LOAD", self._text)
            return await self._run(command, keys[0] if keys else "", replicas)

    async def _run(self, command: tuple[Any, ...], first_key: str, replicas: int) -> Any:
        """The command on a pooled connection, retried as the client retries its commands,
        without the client's layers around it: option parsing, response callbacks and three
        more coroutines a call, for a reply that needs none of them. On a cluster, the
        client sends it to the master of its keys' slot."""
        redis = self._redis
        wait = ("WAIT", replicas, redis.wait_timeout_ms) if replicas else None
        if isinstance(redis, BoundedRedisCluster):
            if wait is None:
                return await redis.execute_command(*command)
            return await _run_replicated_on_cluster(redis, command, first_key, wait)
        pool = cast("ConnectionPool", redis.connection_pool)
        return await within(redis.deadline_seconds, _run_on_pool(pool, command, wait))


def wait_ms(timeout_seconds: float) -> int:
    """How long a commit waits for its replicas: half of REDIS_TIMEOUT_SECONDS, so that a
    slow replica is told apart from a Redis that does not answer."""
    return max(int(timeout_seconds * 500), 1)


class NotReplicated(RedisError):
    """A write that fewer replicas than REDIS_WAIT_REPLICAS acknowledged in time: it may not
    survive the loss of its master, so the turn is not answered as saved."""


def _replicated(reply: Any, acked: Any, wait: tuple[str, int, int]) -> Any:
    if int(acked) < wait[1]:
        raise NotReplicated(f"{acked} of {wait[1]} replicas acknowledged within {wait[2]} ms")
    return reply


async def _run_replicated_on_cluster(
    redis: BoundedRedisCluster, command: tuple[Any, ...], key: str, wait: tuple[str, int, int]
) -> Any:
    # One pipeline to the key's master: the script and WAIT share its connection.
    node = redis.get_node_from_key(key)
    async with redis.pipeline() as pipe:
        pipe.execute_command(*command)
        pipe.execute_command(*wait, target_nodes=node)
        reply, acked = await pipe.execute()
    return _replicated(reply, acked, wait)


async def _run_on_pool(
    pool: ConnectionPool, command: tuple[Any, ...], wait: tuple[str, int, int] | None
) -> Any:
    connection = await pool.get_connection()
    try:
        return await connection.retry.call_with_retry(
            lambda: _send_and_read(connection, command, wait),
            lambda error: _drop_or_raise(connection, error),
        )
    finally:
        await pool.release(connection)


async def _send_and_read(
    connection: AbstractConnection, command: tuple[Any, ...], wait: tuple[str, int, int] | None
) -> Any:
    # No health check to skip: the pool's connections have no health_check_interval.
    if wait is None:
        await connection.send_packed_command(connection.pack_command(*command), False)
        return await connection.read_response()
    await connection.send_packed_command(connection.pack_commands([command, wait]), False)
    try:
        reply = await connection.read_response()
    except ResponseError:
        await connection.read_response()  # WAIT's, so the connection is left with none
        raise
    return _replicated(reply, await connection.read_response(), wait)


async def _drop_or_raise(connection: AbstractConnection, error: BaseException) -> None:
    """What the client does with a failed attempt: drop the connection; retry only the
    errors it retries (a lost connection, a timeout)."""
    await connection.disconnect()
    retried = connection.retry_on_error
    if not retried or not isinstance(error, tuple(retried)):
        raise error


# The constants every script shares, from the Python that defines them: one value each.
_CONSTANTS = (
    f"local DAY_MS = {DAY_MS}\n"
    f"local MAX_TOKENS_PER_CALL = {MAX_TOKENS_PER_CALL}\n"
    f"local MAX_COST_PER_CALL = {MAX_COST_PER_CALL!r}\n"
    f"local HOLD_MS = {HOLD_MS}\n"
    f"local SETTLED_MS = {SETTLED_MS}\n"
    f"local PROMPT_BYTES_PER_TOKEN = {PROMPT_BYTES_PER_TOKEN}\n"
)


def lua_script(name: str, *, after: tuple[str, ...] = ()) -> str:
    """The text of `lua/<name>` in this package, behind the shared constants, `prelude.lua`
    (the functions every script shares) and the scripts of `after` (shared functions: Redis
    scripts cannot call one another)."""
    folder = files("app.store").joinpath("lua")
    parts = ("prelude.lua", *after, name)
    return _CONSTANTS + "".join(folder.joinpath(part).read_text(encoding="utf-8") for part in parts)


async def awaited(command: Awaitable[Any] | Any) -> Any:
    """Await a redis-py asyncio command.

    Its stubs share the sync client's `Awaitable[T] | T` and assume decoded strings; callers
    annotate the bytes they really get.
    """
    return await cast("Awaitable[Any]", command)
