"""The read side of the worker's metrics: per-day, per-model counters for operators."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from app.schemas import CallStats, DayStats, Stats
from app.store import keys
from app.store.heartbeat import worker_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

_INT_COUNTERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens")


def _add(stats: CallStats, counter: str, value: bytes) -> None:
    if counter == "cost":
        stats.cost += float(value)
    elif counter.startswith("errors:"):
        status = counter.removeprefix("errors:")
        stats.errors_by_status[status] = stats.errors_by_status.get(status, 0) + int(value)
    elif counter in _INT_COUNTERS:
        setattr(stats, counter, getattr(stats, counter) + int(value))


def day_stats(day: str, fields: dict[bytes, bytes]) -> DayStats:
    """Fold `<model>|<counter>` fields into per-model and total counters."""
    totals = CallStats()
    models: dict[str, CallStats] = {}
    for name, value in fields.items():
        model, _, counter = name.decode().rpartition("|")
        _add(models.setdefault(model, CallStats()), counter, value)
        _add(totals, counter, value)
    return DayStats(day=day, totals=totals, models=dict(sorted(models.items())))


async def usage_counts(redis: Redis) -> tuple[int, int]:
    """The usage events waiting in the inbox, and those ever set aside as dead."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(keys.USAGE_INBOX)
        pipe.get(keys.USAGE_DEAD_COUNT)
        backlog, dead = await pipe.execute()
    return int(backlog), int(dead or 0)


async def read_stats(redis: Redis, *, days: int) -> Stats:
    """The last `days` UTC days, today first, in one round trip."""
    today = datetime.now(UTC).date()
    names = [(today - timedelta(days=offset)).isoformat() for offset in range(days)]
    async with redis.pipeline(transaction=False) as pipe:
        for day in names:
            pipe.hgetall(keys.daily_metrics(day))
        pipe.zcard(keys.ALL_SESSIONS)
        pipe.llen(keys.USAGE_INBOX)
        pipe.get(keys.USAGE_DEAD_COUNT)
        pipe.get(keys.WORKER_HEARTBEAT)
        *per_day, sessions, backlog, dead, beat = await pipe.execute()
    return Stats(
        days=[day_stats(day, fields) for day, fields in zip(names, per_day, strict=True)],
        sessions=sessions,
        usage_backlog=backlog,
        usage_dead=int(dead or 0),
        worker=worker_state(beat, time.time()),
    )
