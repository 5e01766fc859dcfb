"""WorkerSettings: what `arq workers.settings.WorkerSettings` runs."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.settings import load_settings
from workers.tasks import (
    correct_estimates,
    drain_usage,
    heartbeat,
    prune_sessions,
    shutdown,
    startup,
)

logger = logging.getLogger("workers.settings")
settings = load_settings()


def every(seconds: int) -> tuple[set[int], set[int] | None]:
    """arq cron `second` and `minute` for "every `seconds`" (exact when it divides 60 or 3600)."""
    if seconds < 60:
        return set(range(0, 60, seconds)), None
    return {0}, set(range(0, 60, seconds // 60))


prune_second, prune_minute = every(settings.prune_interval_seconds)


class LoggedBackoff(ExponentialBackoff):
    """arq's Redis backoff, saying in the log that Redis is away while it waits."""

    def compute(self, failures: int) -> float:
        delay = super().compute(failures)
        if failures == 1 or failures % 12 == 0:
            logger.warning(
                "redis unreachable; the worker waits for it",
                extra={"fields": {"failures": failures, "retry_in_s": round(delay, 2)}},
            )
        return delay


def arq_redis_settings(url: str) -> RedisSettings:
    """arq's connection, retrying without end through a Redis outage (capped backoff), so
    the worker waits for Redis to return instead of exiting."""
    return dataclasses.replace(
        RedisSettings.from_dsn(url),
        conn_timeout=5,
        conn_retries=60,
        retry=Retry(LoggedBackoff(cap=5.0, base=0.2), retries=-1),
        # OSError too: redis-py retries a connect only for the errors listed here.
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
    )


class WorkerSettings:
    redis_settings = arq_redis_settings(settings.queue_url)
    functions: ClassVar[list[Any]] = []
    cron_jobs: ClassVar[list[Any]] = [
        # unique: one worker per tick runs it, however many are up; the kept result is what
        # stops a late worker from enqueueing the same tick again.
        cron(
            drain_usage,
            second=set(range(60)),
            unique=True,
            run_at_startup=True,
            keep_result=30,
            timeout=60,
        ),
        cron(
            prune_sessions,
            second=prune_second,
            minute=prune_minute,
            unique=True,
            run_at_startup=True,
            keep_result=max(settings.prune_interval_seconds * 2, 30),
            timeout=300,
        ),
        cron(
            correct_estimates,
            second=set(range(0, 60, 2)),
            unique=True,
            keep_result=10,
            timeout=60,
        ),
        # Not unique: every worker beats.
        cron(heartbeat, second=set(range(0, 60, 5)), unique=False, keep_result=0, timeout=10),
    ]
    on_startup = startup
    on_shutdown = shutdown
    # Under a second from a turn to its usage in the metrics.
    poll_delay = 0.25
    # On SIGTERM a running job may finish; one cut short leaves its work in Redis (every job
    # commits in one script, or on a cluster in steps that the next run resumes without
    # counting twice), so the next run picks it up.
    job_completion_wait = round(settings.shutdown_grace_seconds)
    health_check_interval = 30
