"""Pruning: idle sessions, index entries of expired ones, MAX_SESSIONS_PER_OWNER and
MAX_SESSIONS."""

from __future__ import annotations

import heapq
import logging
import time

import msgspec

from app.clock import now_ms
from app.store import keys
from app.store.client import LuaScript, StoreRedis, layout_of, lua_script

logger = logging.getLogger("workers.pruning")

BATCH_SIZE = 200
# The functions every prune script shares.
PRUNE_LUA = ("prune_steps.lua",)


class PruneReport(msgspec.Struct, kw_only=True):
    """What one run removed."""

    idle: int = 0
    expired_index_entries: int = 0
    evicted: int = 0  # beyond MAX_SESSIONS
    evicted_over_owner_cap: int = 0  # beyond MAX_SESSIONS_PER_OWNER
    owner_index_entries: int = 0
    owners_forgotten: int = 0
    migrated: int = 0  # sessions moved from the layout before owner-scoped ids
    duration_ms: float = 0.0


class Pruner:
    """Removes sessions idle longer than the session TTL; evicts the least recently active
    sessions of an owner beyond `per_owner`, then, beyond `max_sessions`, those of the owners
    holding the most: one caller filling Redis evicts its own sessions, not everyone's.

    On a Redis Cluster each session is deleted in its slot (only if still idle, as on one
    Redis), then its index entries in theirs, each only while its score says idle: a session
    active again meanwhile keeps them. A crash between leaves index entries of a deleted
    session, which the next run drops as those of an expired one.
    """

    def __init__(
        self,
        redis: StoreRedis,
        *,
        ttl_ms: int,
        max_sessions: int | None,
        per_owner: int | None = None,
    ) -> None:
        self._redis = redis
        self._layout = layout_of(redis)
        self._ttl_ms = ttl_ms
        self._max_sessions = max_sessions
        self._per_owner = per_owner
        self._prune = LuaScript(redis, lua_script("prune_sessions.lua", after=PRUNE_LUA))
        self._prune_one = LuaScript(redis, lua_script("prune_session.lua", after=PRUNE_LUA))
        self._unindex = LuaScript(redis, lua_script("unindex_idle.lua"))
        self._prune_owners = LuaScript(redis, lua_script("prune_owner_indexes.lua"))
        self._migrate = LuaScript(redis, lua_script("migrate_sessions.lua"))
        self._migrated = False

    async def run(self) -> PruneReport:
        started = time.perf_counter()
        report = PruneReport()
        if not self._migrated and not self._layout.cluster:  # the old layout was never on one
            report.migrated = await self._migrate_old_layout()
            self._migrated = True
        cutoff = now_ms() - self._ttl_ms
        await self._prune_idle(cutoff, report)
        if self._per_owner is not None or self._max_sessions is not None:
            counts = await self._owner_counts()
            if self._per_owner is not None:
                await self._evict_over_owner_cap(self._per_owner, counts, report)
            if self._max_sessions is not None:
                await self._evict(self._max_sessions, counts, report)
        await self._prune_owner_indexes(cutoff, report)
        report.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        logger.info("prune run", extra={"fields": msgspec.structs.asdict(report)})
        return report

    async def _migrate_old_layout(self) -> int:
        """Once per worker: sessions still named by their id alone (the layout before session
        ids were scoped to their owner) move to their owner's name, so an upgrade loses none."""
        moved = 0
        for shard in self._layout.shards:
            cursor = 0
            while True:
                cursor, entries = await self._redis.zscan(
                    shard.all_sessions, cursor, count=BATCH_SIZE
                )
                old = [member for member, _ in entries if b":" not in member]
                if old:
                    moved += int(
                        await self._migrate(keys=[shard.all_sessions], args=[keys.PREFIX, *old])
                    )
                if cursor == 0:
                    break
        return moved

    async def _delete(self, shard: keys.Shard, cutoff: int, refs: list[bytes]) -> tuple[int, int]:
        """Delete the sessions `refs` still idle since `cutoff`, and drop their index entries
        and those of expired ones: (sessions deleted, index entries of expired ones)."""
        if self._layout.cluster:
            return await self._delete_in_steps(shard, cutoff, refs)
        deleted, orphans = await self._prune(
            keys=[shard.all_sessions], args=[keys.PREFIX, cutoff, *refs]
        )
        return int(deleted), int(orphans)

    async def _delete_in_steps(
        self, shard: keys.Shard, cutoff: int, refs: list[bytes]
    ) -> tuple[int, int]:
        """`_delete` on a Redis Cluster: each session in its slot, then its index entries."""
        deleted, orphans = 0, 0
        gone: list[bytes] = []
        by_owner: dict[str, list[str]] = {}
        for ref in refs:
            pruned = int(
                await self._prune_one(keys=list(keys.session_keys(ref.decode())), args=[cutoff])
            )
            if not pruned:
                continue  # a turn came after the pick
            gone.append(ref)
            if pruned == 2:
                # Expired: its owner's index entry goes with the owner-index pass, as on one
                # Redis.
                orphans += 1
                continue
            deleted += 1
            owner, session_id = keys.split_ref(ref.decode())
            by_owner.setdefault(owner, []).append(session_id)
        if gone:
            await self._unindex(keys=[shard.all_sessions], args=[cutoff, *gone])
            for owner, session_ids in by_owner.items():
                index = self._layout.owner_sessions(owner)
                await self._unindex(keys=[index], args=[cutoff, *session_ids])
        return deleted, orphans

    async def _prune_idle(self, cutoff: int, report: PruneReport) -> None:
        """Sessions whose last activity is older than the TTL, and their index entries."""
        for shard in self._layout.shards:
            while True:
                refs: list[bytes] = await self._redis.zrangebyscore(
                    shard.all_sessions, "-inf", cutoff, start=0, num=BATCH_SIZE
                )
                if not refs:
                    break
                deleted, orphans = await self._delete(shard, cutoff, refs)
                report.idle += deleted
                report.expired_index_entries += orphans
                if deleted + orphans == 0:
                    break  # every candidate got a turn meanwhile

    async def _owner_counts(self) -> dict[str, int]:
        """How many sessions each owner holds (its index's size)."""
        counts: dict[str, int] = {}
        for shard in self._layout.shards:
            start = 0
            while True:
                owners: list[bytes] = await self._redis.zrange(
                    shard.owners, start, start + BATCH_SIZE - 1
                )
                if not owners:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for owner in owners:
                        pipe.zcard(self._layout.owner_sessions(owner.decode()))
                    sizes: list[int] = await pipe.execute()
                counts.update((o.decode(), int(n)) for o, n in zip(owners, sizes, strict=True))
                start += BATCH_SIZE
        return counts

    async def _evict_oldest(self, owner: str, count: int) -> tuple[int, int]:
        """The owner's `count` least recently active sessions (at most a batch): how many
        were deleted, and how many index entries of expired ones went."""
        oldest: list[tuple[bytes, float]] = await self._redis.zrange(
            self._layout.owner_sessions(owner), 0, min(count, BATCH_SIZE) - 1, withscores=True
        )
        if not oldest:
            return 0, 0
        # A session active after its pick has `updated` above every picked score.
        cutoff = int(max(score for _, score in oldest))
        refs = [keys.session_ref(owner, member.decode()).encode() for member, _ in oldest]
        return await self._delete(self._layout.shard(owner), cutoff, refs)

    async def _evict_over_owner_cap(
        self, cap: int, counts: dict[str, int], report: PruneReport
    ) -> None:
        for owner, count in counts.items():
            while count > cap:
                deleted, orphans = await self._evict_oldest(owner, count - cap)
                report.evicted_over_owner_cap += deleted
                report.expired_index_entries += orphans
                if not deleted + orphans:
                    break
                count -= deleted + orphans
            counts[owner] = count

    async def _evict(self, limit: int, counts: dict[str, int], report: PruneReport) -> None:
        """Beyond `limit` sessions in all: the least recently active of the owner holding the
        most, until it holds no more than the next, and so on."""
        excess = -limit
        for shard in self._layout.shards:
            excess += await self._redis.zcard(shard.all_sessions)
        largest = [(-count, owner) for owner, count in counts.items() if count]
        heapq.heapify(largest)
        while excess > 0 and largest:
            count, owner = -largest[0][0], heapq.heappop(largest)[1]
            runner_up = -largest[0][0] if largest else 0
            deleted, orphans = await self._evict_oldest(owner, min(excess, count - runner_up + 1))
            report.evicted += deleted
            report.expired_index_entries += orphans
            removed = deleted + orphans
            if not removed:
                continue  # every pick got a turn meanwhile: leave this owner for the next run
            excess -= removed
            if count - removed > 0:
                heapq.heappush(largest, (-(count - removed), owner))

    async def _prune_owner_indexes(self, cutoff: int, report: PruneReport) -> None:
        for shard in self._layout.shards:
            start = 0
            while True:
                owners: list[bytes] = await self._redis.zrange(
                    shard.owners, start, start + BATCH_SIZE - 1
                )
                if not owners:
                    break
                if self._layout.cluster:
                    dropped, forgotten = await self._prune_owners_in_steps(shard, cutoff, owners)
                else:
                    dropped, forgotten = await self._prune_owners(
                        keys=[shard.owners], args=[keys.PREFIX, cutoff, *owners]
                    )
                report.owner_index_entries += int(dropped)
                report.owners_forgotten += int(forgotten)
                start += BATCH_SIZE - int(forgotten)

    async def _prune_owners_in_steps(
        self, shard: keys.Shard, cutoff: int, owners: list[bytes]
    ) -> tuple[int, int]:
        """prune_owner_indexes.lua on a Redis Cluster: each owner's index in its slot, then
        the owners whose index is gone out of the shard's, unless active again meanwhile."""
        dropped = 0
        forgotten: list[bytes] = []
        for owner in owners:
            index = self._layout.owner_sessions(owner.decode())
            dropped += int(await self._redis.zremrangebyscore(index, "-inf", cutoff))
            if not await self._redis.exists(index):
                forgotten.append(owner)
        if not forgotten:
            return dropped, 0
        return dropped, int(await self._unindex(keys=[shard.owners], args=[cutoff, *forgotten]))
