"""WorkerSettings: what `arq workers.settings.WorkerSettings` runs."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from app.settings import load_settings
from workers.tasks import MAX_TRIES, drain_usage, heartbeat, prune_sessions, shutdown, startup

settings = load_settings()


def every(seconds: int) -> tuple[set[int], set[int] | None]:
    """arq cron `second` and `minute` for "every `seconds`" (exact when it divides 60 or 3600)."""
    if seconds < 60:
        return set(range(0, 60, seconds)), None
    return {0}, set(range(0, 60, seconds // 60))


prune_second, prune_minute = every(settings.prune_interval_seconds)


class WorkerSettings:
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    functions: ClassVar[list[Any]] = []
    cron_jobs: ClassVar[list[Any]] = [
        # unique: one worker per tick runs it, however many are up; the kept result is what
        # stops a late worker from enqueueing the same tick again.
        cron(
            drain_usage,
            second=set(range(60)),
            unique=True,
            run_at_startup=True,
            max_tries=MAX_TRIES,
            keep_result=30,
            timeout=60,
        ),
        cron(
            prune_sessions,
            second=prune_second,
            minute=prune_minute,
            unique=True,
            run_at_startup=True,
            max_tries=MAX_TRIES,
            keep_result=max(settings.prune_interval_seconds * 2, 30),
            timeout=300,
        ),
        # Not unique: every worker beats.
        cron(heartbeat, second=set(range(0, 60, 5)), unique=False, keep_result=0, timeout=10),
    ]
    on_startup = startup
    on_shutdown = shutdown
    # Under a second from a turn to its usage in the metrics.
    poll_delay = 0.25
    health_check_interval = 30
