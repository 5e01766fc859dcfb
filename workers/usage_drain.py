"""Usage metrics: drain the inbox of usage events into per-session and per-day counters."""

from __future__ import annotations

import logging
import time

import msgspec

from app.clock import DAY_MS
from app.store import keys
from app.store.client import LuaScript, StoreRedis, awaited, layout_of, lua_script

logger = logging.getLogger("workers.metrics")

BATCH_SIZE = 500
# One run stops after this many batches so a backlog cannot starve the other jobs.
MAX_BATCHES = 40
# The functions every drain script shares.
USAGE_LUA = ("usage_events.lua",)


class _Session(msgspec.Struct):
    """What the worker reads of a pending event: the session it names (`<owner>:<id>`)."""

    session_id: str


_session_of = msgspec.json.Decoder(_Session)


class UsageDrain:
    """Moves usage events from `chat:usage:inbox` into counters, exactly once each; an event
    it cannot apply goes, with its reason, to `chat:usage:dead`.

    On a Redis Cluster a shard's batch takes two steps, each in one slot: the day's metrics,
    with the events of sessions moved to the shard's pending list (lua/drain_usage_shard.lua);
    then each of those applied to its session, once (lua/apply_session_usage.lua), and
    dropped from the pending list. A crash between them leaves the events pending, and the
    next run applies what was not counted yet.
    """

    def __init__(self, redis: StoreRedis, *, retention_days: int) -> None:
        self._redis = redis
        self._cluster = layout_of(redis).cluster
        self._shards = layout_of(redis).shards
        if self._cluster:
            self._script = LuaScript(redis, lua_script("drain_usage_shard.lua", after=USAGE_LUA))
        else:
            self._script = LuaScript(redis, lua_script("drain_usage.lua", after=USAGE_LUA))
        self._apply = LuaScript(redis, lua_script("apply_session_usage.lua", after=USAGE_LUA))
        self._drop = LuaScript(redis, lua_script("drop_pending.lua"))
        self._retention_ms = retention_days * DAY_MS

    async def run(self) -> int:
        """Drain what is there; returns how many events were applied."""
        started = time.perf_counter()
        applied_total = dead_total = 0
        for shard in self._shards:
            if self._cluster:
                await self._apply_pending(shard)  # what a run cut short left
            for _ in range(MAX_BATCHES):
                applied, dead = await self._script(
                    keys=self._batch_keys(shard),
                    args=[
                        BATCH_SIZE,
                        keys.PREFIX,
                        self._retention_ms,
                        keys.USAGE_DEAD_CAP,
                        shard.suffix,
                    ],
                )
                if self._cluster:
                    await self._apply_pending(shard)
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

    def _batch_keys(self, shard: keys.Shard) -> list[str]:
        if self._cluster:
            return [
                shard.usage_inbox,
                shard.usage_dead,
                shard.usage_pending,
                shard.usage_pending_seq,
            ]
        return [shard.usage_inbox, shard.usage_dead]

    async def _apply_pending(self, shard: keys.Shard) -> int:
        """Apply the shard's pending events to their sessions, oldest first, and drop them;
        returns how many sessions counted one (the others had, or are gone)."""
        counted = 0
        while True:
            entries: list[bytes] = await awaited(
                self._redis.lrange(shard.usage_pending, 0, BATCH_SIZE - 1)
            )
            if not entries:
                return counted
            for entry in entries:
                counted += await self._apply_one(entry)
            await self._drop(keys=[shard.usage_pending], args=entries)
            if len(entries) < BATCH_SIZE:
                return counted

    async def _apply_one(self, entry: bytes) -> int:
        seq, _, raw = entry.partition(b" ")
        try:
            ref = _session_of.decode(raw).session_id
        except msgspec.DecodeError:
            # JSON to Redis's cjson, not to msgspec (invalid UTF-8): no session is named so.
            logger.error(
                "a pending usage event names no session",
                extra={"fields": {"seq": seq.decode(errors="replace")}},
            )
            return 0
        session = keys.session_keys(ref)
        applied = await self._apply(keys=[session.meta, session.usage], args=[seq, raw])
        return int(applied)
