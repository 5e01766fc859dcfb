"""The arq jobs: plain `async def f(ctx)` functions over the services made at startup."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from app import keys
from app.logs import configure_logging
from app.settings import load_settings
from app.storage import create_redis
from workers.metrics import UsageDrain
from workers.pruning import Pruner

logger = logging.getLogger("workers.tasks")

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
    )
    ctx["redis_client"] = redis
    ctx["drain"] = UsageDrain(redis, retention_days=settings.metrics_retention_days)
    ctx["pruner"] = Pruner(
        redis, ttl_ms=settings.session_ttl_ms, max_sessions=settings.max_sessions
    )
    await heartbeat(ctx)
    logger.info(
        "worker started",
        extra={"fields": {"host": socket.gethostname(), "pid": os.getpid()}},
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    redis = ctx.get("redis_client")
    if redis is not None:
        await redis.aclose()


def _retry_or_give_up(ctx: dict[str, Any], job: str, exc: Exception) -> Retry:
    """Redis hiccups are retried with backoff; the last failure is logged with its reason."""
    job_try = int(ctx.get("job_try", 1))
    fields = {"job": job, "try": job_try, "error": f"{type(exc).__name__}: {exc}"}
    if job_try >= MAX_TRIES:
        logger.error("job failed for good", extra={"fields": fields})
        raise exc
    logger.warning("job failed; retrying", extra={"fields": fields})
    return Retry(defer=min(0.5 * 2**job_try, 10.0))


async def drain_usage(ctx: dict[str, Any]) -> int:
    """Apply the usage of committed turns and failed calls to the metrics."""
    drain: UsageDrain = ctx["drain"]
    try:
        return await drain.run()
    except RedisError as exc:
        raise _retry_or_give_up(ctx, "drain_usage", exc) from exc


async def prune_sessions(ctx: dict[str, Any]) -> dict[str, Any]:
    """Remove idle sessions and stale index entries; evict beyond MAX_SESSIONS."""
    pruner: Pruner = ctx["pruner"]
    try:
        report = await pruner.run()
    except RedisError as exc:
        raise _retry_or_give_up(ctx, "prune_sessions", exc) from exc
    return {"idle": report.idle, "evicted": report.evicted}


async def heartbeat(ctx: dict[str, Any]) -> None:
    """Tell the API this worker is alive: `chat:worker:heartbeat` holds the last beat."""
    redis = ctx["redis_client"]
    try:
        await redis.set(keys.WORKER_HEARTBEAT, f"{time.time():.3f}", ex=HEARTBEAT_TTL_SECONDS)
    except RedisError as exc:
        logger.warning("heartbeat failed", extra={"fields": {"error": type(exc).__name__}})
