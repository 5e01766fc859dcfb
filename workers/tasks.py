"""The arq jobs: plain `async def f(ctx)` functions over the services made at startup."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError

from app.ops.logs import configure_logging
from app.settings import load_settings
from app.store import keys
from app.store.client import create_redis
from app.store.estimates import EstimateQueue
from app.upstream.setup import create_transport, openrouter_client
from workers.corrections import Corrections
from workers.pruning import Pruner
from workers.usage_drain import UsageDrain

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger("workers.tasks")

T = TypeVar("T")

HEARTBEAT_TTL_SECONDS = 120
MAX_TRIES = 4


async def startup(ctx: dict[str, Any]) -> None:
    settings = load_settings()
    # Here, not at import: arq's CLI installs its own logging config after the import.
    configure_logging(settings.log_level, settings.effective_log_format)
    if settings.log_level != "DEBUG":
        # arq logs every job start and end; one a second for the usage drain.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
    redis = create_redis(
        settings.redis_url,
        timeout_seconds=max(settings.redis_timeout_seconds, 5.0),
        max_connections=8,
        cluster=settings.redis_cluster,
    )
    ctx["redis_client"] = redis
    ctx["drain"] = UsageDrain(redis, retention_days=settings.metrics_retention_days)
    ctx["pruner"] = Pruner(
        redis,
        ttl_ms=settings.session_ttl_ms,
        max_sessions=settings.max_sessions,
        per_owner=settings.max_sessions_per_owner or None,
    )
    ctx["running"] = {}
    if settings.server_key_mode:
        # Only with the server's key can the worker ask OpenRouter what a generation cost.
        transport = create_transport(settings)
        ctx["transport"] = transport
        ctx["corrections"] = Corrections(
            EstimateQueue(redis),
            openrouter_client(settings, transport),
            settings.openrouter_api_key,
        )
    await heartbeat(ctx)
    logger.info(
        "worker started",
        extra={"fields": {"host": socket.gethostname(), "pid": os.getpid()}},
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    transport = ctx.get("transport")
    if transport is not None:
        await transport.aclose()
    redis = ctx.get("redis_client")
    if redis is not None:
        await redis.aclose()


async def _with_retries(ctx: dict[str, Any], job: str, run: Callable[[], Awaitable[T]]) -> T | None:
    """Run a cron job, retrying Redis failures with backoff; the last one is logged with its
    reason, and the next tick tries afresh.

    Retries happen here rather than through arq's `Retry`: arq holds a retried cron job for a
    minute. While a run is retrying, later ticks of the same job on this worker are skipped.
    """
    running: dict[str, asyncio.Lock] = ctx["running"]
    lock = running.setdefault(job, asyncio.Lock())
    if lock.locked():
        return None
    async with lock:
        for attempt in range(1, MAX_TRIES + 1):
            try:
                return await run()
            except RedisError as exc:
                fields = {"job": job, "try": attempt, "error": f"{type(exc).__name__}: {exc}"}
                if attempt == MAX_TRIES:
                    logger.error("job failed for good", extra={"fields": fields})
                    return None
                logger.warning("job failed; retrying", extra={"fields": fields})
                await asyncio.sleep(min(0.5 * 2**attempt, 10.0))
    return None


async def drain_usage(ctx: dict[str, Any]) -> int:
    """Apply the usage of committed turns and failed calls to the metrics."""
    drain: UsageDrain = ctx["drain"]
    return await _with_retries(ctx, "drain_usage", drain.run) or 0


async def prune_sessions(ctx: dict[str, Any]) -> dict[str, Any]:
    """Remove idle sessions and stale index entries; evict beyond MAX_SESSIONS."""
    pruner: Pruner = ctx["pruner"]
    report = await _with_retries(ctx, "prune_sessions", pruner.run)
    return {} if report is None else {"idle": report.idle, "evicted": report.evicted}


async def correct_estimates(ctx: dict[str, Any]) -> int:
    """Correct cut streams' estimated spend with OpenRouter's records (server-key mode)."""
    corrections: Corrections | None = ctx.get("corrections")
    if corrections is None:
        return 0
    return await _with_retries(ctx, "correct_estimates", corrections.run) or 0


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Tell the API this worker is alive: `chat:worker:heartbeat` holds the last beat."""
    redis = ctx["redis_client"]
    try:
        await redis.set(keys.WORKER_HEARTBEAT, f"{time.time():.3f}", ex=HEARTBEAT_TTL_SECONDS)
    except RedisError as exc:
        logger.warning("heartbeat failed", extra={"fields": {"error": type(exc).__name__}})
