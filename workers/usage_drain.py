"""Usage metrics: drain the inbox of usage events into per-session and per-day counters."""

from __future__ import annotations

import logging
import time

from app.clock import DAY_MS
from app.store import keys
from app.store.client import LuaScript, StoreRedis, layout_of, lua_script

logger = logging.getLogger("workers.metrics")

BATCH_SIZE = 500
# One run stops after this many batches so a backlog cannot starve the other jobs.
MAX_BATCHES = 40


class UsageDrain:
    """Moves usage events from `chat:usage:inbox` into counters, exactly once each; an event
    it cannot apply goes, with its reason, to `chat:usage:dead`."""

    def __init__(self, redis: StoreRedis, *, retention_days: int) -> None:
        self._shards = layout_of(redis).shards
        self._script = LuaScript(redis, lua_script("drain_usage.lua"))
        self._retention_ms = retention_days * DAY_MS

    async def run(self) -> int:
        """Drain what is there; returns how many events were applied."""
        started = time.perf_counter()
        applied_total = dead_total = 0
        for shard in self._shards:
            for _ in range(MAX_BATCHES):
                applied, dead = await self._script(
                    keys=[shard.usage_inbox, shard.usage_dead],
                    args=[
                        BATCH_SIZE,
                        keys.PREFIX,
                        self._retention_ms,
                        keys.USAGE_DEAD_CAP,
                        shard.suffix,
                    ],
                )
                applied_total += applied
                dead_total += dead
                if applied + dead < BATCH_SIZE:
                    break
        if dead_total:
            logger.error(
                "usage events set aside in the dead-letter list",
                extra={"fields": {"dead": dead_total, "list": self._shards[0].usage_dead}},
            )
        if applied_total:
            logger.info(
                "usage applied",
                extra={
                    "fields": {
                        "events": applied_total,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                },
            )
        return int(applied_total)
