"""Pruning: idle sessions, index entries of expired ones, and the MAX_SESSIONS limit."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from app.clock import now_ms
from app.store import keys
from app.store.client import LuaScript, lua_script

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("workers.pruning")

BATCH_SIZE = 200


class PruneReport(msgspec.Struct, kw_only=True):
    """What one run removed."""

    idle: int = 0
    expired_index_entries: int = 0
    evicted: int = 0
    owner_index_entries: int = 0
    owners_forgotten: int = 0
    duration_ms: float = 0.0


class Pruner:
    """Removes sessions idle longer than the session TTL, and evicts beyond `max_sessions`."""

    def __init__(self, redis: Redis, *, ttl_ms: int, max_sessions: int | None) -> None:
        self._redis = redis
        self._ttl_ms = ttl_ms
        self._max_sessions = max_sessions
        self._prune = LuaScript(redis, lua_script("prune_sessions.lua"))
        self._prune_owners = LuaScript(redis, lua_script("prune_owner_indexes.lua"))

    async def run(self) -> PruneReport:
        started = time.perf_counter()
        report = PruneReport()
        cutoff = now_ms() - self._ttl_ms
        await self._prune_idle(cutoff, report)
        if self._max_sessions is not None:
            await self._evict(self._max_sessions, report)
        await self._prune_owner_indexes(cutoff, report)
        report.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        logger.info("prune run", extra={"fields": msgspec.structs.asdict(report)})
        return report

    async def _delete(self, cutoff: int, session_ids: list[bytes]) -> tuple[int, int]:
        deleted, orphans = await self._prune(
            keys=[keys.ALL_SESSIONS], args=[keys.PREFIX, cutoff, *session_ids]
        )
        return int(deleted), int(orphans)

    async def _prune_idle(self, cutoff: int, report: PruneReport) -> None:
        """Sessions whose last activity is older than the TTL, and their index entries."""
        while True:
            ids: list[bytes] = await self._redis.zrangebyscore(
                keys.ALL_SESSIONS, "-inf", cutoff, start=0, num=BATCH_SIZE
            )
            if not ids:
                return
            deleted, orphans = await self._delete(cutoff, ids)
            report.idle += deleted
            report.expired_index_entries += orphans
            if deleted + orphans == 0:
                return  # every candidate got a turn meanwhile

    async def _evict(self, limit: int, report: PruneReport) -> None:
        """The least recently active sessions beyond `limit`, oldest first."""
        while (excess := await self._redis.zcard(keys.ALL_SESSIONS) - limit) > 0:
            oldest: list[tuple[bytes, float]] = await self._redis.zrange(
                keys.ALL_SESSIONS, 0, min(excess, BATCH_SIZE) - 1, withscores=True
            )
            if not oldest:
                return
            # A session active after its pick has `updated` above every picked score.
            cutoff = int(max(score for _, score in oldest))
            deleted, orphans = await self._delete(cutoff, [session_id for session_id, _ in oldest])
            report.evicted += deleted
            report.expired_index_entries += orphans
            if deleted + orphans == 0:
                return

    async def _prune_owner_indexes(self, cutoff: int, report: PruneReport) -> None:
        start = 0
        while True:
            owners: list[bytes] = await self._redis.zrange(
                keys.OWNERS, start, start + BATCH_SIZE - 1
            )
            if not owners:
                return
            dropped, forgotten = await self._prune_owners(
                keys=[keys.OWNERS], args=[keys.PREFIX, cutoff, *owners]
            )
            report.owner_index_entries += int(dropped)
            report.owners_forgotten += int(forgotten)
            start += BATCH_SIZE - int(forgotten)
