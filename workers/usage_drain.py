"""Usage metrics: drain the inbox of usage events into per-session and per-day counters."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from app.clock import DAY_MS
from app.store import keys
from app.store.client import LuaScript, lua_script

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("workers.metrics")

BATCH_SIZE = 500
# One run stops after this many batches so a backlog cannot starve the other jobs.
MAX_BATCHES = 40


class UsageDrain:
    """Moves usage events from `chat:usage:inbox` into counters, exactly once each."""

    def __init__(self, redis: Redis, *, retention_days: int) -> None:
        self._script = LuaScript(redis, lua_script("drain_usage.lua"))
        self._retention_ms = retention_days * DAY_MS

    async def run(self) -> int:
        """Drain what is there; returns how many events were applied."""
        started = time.perf_counter()
        applied_total = dropped_total = 0
        for _ in range(MAX_BATCHES):
            applied, dropped = await self._script(
                keys=[keys.USAGE_INBOX], args=[BATCH_SIZE, keys.PREFIX, self._retention_ms]
            )
            applied_total += applied
            dropped_total += dropped
            if applied + dropped < BATCH_SIZE:
                break
        if dropped_total:
            logger.error(
                "dropped unreadable usage events", extra={"fields": {"dropped": dropped_total}}
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
