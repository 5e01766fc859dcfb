"""The read side of the worker's metrics: per-day, per-model counters for operators."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.schemas import CallStats, DayStats, Stats
from app.store import keys
from app.store.client import layout_of
from app.store.heartbeat import worker_state

if TYPE_CHECKING:
    from app.store.client import StoreRedis

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


async def usage_counts(redis: StoreRedis) -> tuple[int, int]:
    """The usage events waiting in the inboxes (and, on a cluster, in the pending lists), and
    those ever set aside as dead."""
    layout = layout_of(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for shard in layout.shards:
            pipe.llen(shard.usage_inbox)
            pipe.get(shard.usage_dead_count)
        _count_pending(pipe, layout)
        replies = await pipe.execute()
    counts, pending = replies[: 2 * len(layout.shards)], replies[2 * len(layout.shards) :]
    return sum(counts[::2]) + sum(pending), sum(int(dead or 0) for dead in counts[1::2])


def _count_pending(pipe: Any, layout: keys.Layout) -> None:
    """On a cluster, the drained events not yet in their sessions' usage (workers.usage_drain)
    are waiting too; a standalone Redis has none."""
    if layout.cluster:
        for shard in layout.shards:
            pipe.llen(shard.usage_pending)


async def read_stats(redis: StoreRedis, *, days: int) -> Stats:
    """The last `days` UTC days, today first, in one round trip (to each node of a
    cluster), summed over the shards."""
    today = datetime.now(UTC).date()
    names = [(today - timedelta(days=offset)).isoformat() for offset in range(days)]
    shards = layout_of(redis).shards
    async with redis.pipeline(transaction=False) as pipe:
        for day in names:
            for shard in shards:
                pipe.hgetall(shard.daily_metrics(day))
        for shard in shards:
            pipe.zcard(shard.all_sessions)
            pipe.llen(shard.usage_inbox)
            pipe.get(shard.usage_dead_count)
        pipe.get(keys.WORKER_HEARTBEAT)
        _count_pending(pipe, layout_of(redis))
        replies = await pipe.execute()
    per_shard_day = len(names) * len(shards)
    beat_at = per_shard_day + 3 * len(shards)
    counts, beat, pending = replies[per_shard_day:beat_at], replies[beat_at], replies[beat_at + 1 :]
    per_day = []
    for index in range(len(names)):
        merged: dict[bytes, bytes] = {}
        for fields in replies[index * len(shards) : (index + 1) * len(shards)]:
            for name, value in fields.items():
                merged[name] = _sum(merged.get(name), value)
        per_day.append(merged)
    return Stats(
        days=[day_stats(day, fields) for day, fields in zip(names, per_day, strict=True)],
        sessions=sum(counts[0::3]),
        usage_backlog=sum(counts[1::3]) + sum(pending),
        usage_dead=sum(int(dead or 0) for dead in counts[2::3]),
        worker=worker_state(beat, time.time()),
    )


def _sum(left: bytes | None, right: bytes) -> bytes:
    """Two shards' counts of one field (costs are decimals)."""
    if left is None:
        return right
    if b"." in left or b"." in right or b"e" in left or b"e" in right:
        return repr(float(left) + float(right)).encode()
    return b"%d" % (int(left) + int(right))
