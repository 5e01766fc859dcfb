"""The usage event: what the API hands to the worker for each turn and each failed call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeAlias

import msgspec
from redis.exceptions import RedisError

from app.clock import now_ms, utc_day
from app.store import keys
from app.store.client import LuaScript, StoreRedis, awaited, layout_of, lua_script
from app.store.estimates import Estimate, EstimateQueue
from app.store.spend_steps import COMMIT_LUA, record_spend

logger = logging.getLogger("app.usage")

# The label of every model the catalogue lacks and every status that is not ours: the metrics
# count them together (app.turns.labels).
OTHER: Literal["other"] = "other"
StatusLabel: TypeAlias = int | Literal["other"]


class UsageEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One upstream call. `status` 200 is a committed turn; anything else a failed call.

    `model` and `status` are labels (`app.turns.labels`): they name fields of the day's
    metrics and of the session's usage, so they come from a bounded set.
    """

    at: int  # ms since the epoch
    day: str  # the UTC day of `at`, YYYY-MM-DD: the metrics bucket
    model: str
    status: StatusLabel = 200
    session_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    # Counts estimated by the API (a stream cut before OpenRouter's usage), not reported.
    estimated: bool = False

    @classmethod
    def at_time(cls, when: datetime, **fields: Any) -> UsageEvent:
        at = int(when.timestamp() * 1000)
        return cls(at=at, day=utc_day(at), **fields)

    @classmethod
    def now(cls, **fields: Any) -> UsageEvent:
        return cls.at_time(datetime.now(UTC), **fields)


usage_event_encoder = msgspec.json.Encoder()


class Settlement(NamedTuple):
    """A turn's end against its owner's limits: what it spent, in tokens and micro-USD."""

    owner: str
    turn_id: str
    tokens: int
    micro_usd: int


class UsageInbox:
    """Failed calls and turns without a session go to the worker's inbox from here; turns of a
    session get there inside their commit. For an owner with limits, the same script settles
    the turn (`lua/pass_through.lua`)."""

    def __init__(self, redis: StoreRedis) -> None:
        self._redis = redis
        self._layout = layout_of(redis)
        self._next_shard = 0
        self._settle = LuaScript(redis, lua_script("pass_through.lua", after=("settle.lua",)))
        self._commit_owner = LuaScript(redis, lua_script("commit_owner.lua", after=COMMIT_LUA))
        self._record = LuaScript(redis, lua_script("record_turn.lua", after=COMMIT_LUA))
        self._estimates = EstimateQueue(redis)

    async def _push(
        self, event: UsageEvent, settlement: Settlement | None
    ) -> tuple[int, int] | None:
        record = usage_event_encoder.encode(event)
        if settlement is None:
            # No owner to shard by: each in turn, the worker drains them all.
            self._next_shard = (self._next_shard + 1) % len(self._layout.shards)
            shard = self._layout.shards[self._next_shard]
            await awaited(self._redis.rpush(shard.usage_inbox, record))
            return None
        owner = settlement.owner
        if self._layout.cluster:
            tokens, spent = await record_spend(
                self._redis,
                self._commit_owner,
                self._record,
                owner=owner,
                session_id="",
                turn_id=settlement.turn_id,
                now=now_ms(),
                ttl_ms=1,
                record=record,
                spent=(settlement.tokens, settlement.micro_usd),
            )
        else:
            tokens, spent = await self._settle(
                keys=[
                    self._layout.shard(owner).usage_inbox,
                    keys.owner_limit(owner),
                    keys.owner_holds(owner),
                ],
                args=[record, settlement.turn_id, settlement.tokens, settlement.micro_usd],
            )
        return (int(tokens), int(spent)) if tokens >= 0 else None

    async def passed_through(
        self, event: UsageEvent, settlement: Settlement | None
    ) -> tuple[int, int] | None:
        """A turn that stores no session still counts in the metrics and, for an owner with
        limits, against them: the owner's tokens and micro-USD of the day are returned. Best
        effort: the turn was answered (and billed) whether or not Redis takes the event."""
        try:
            return await self._push(event, settlement)
        except RedisError:
            logger.warning(
                "could not record a turn's usage", extra={"fields": {"status": event.status}}
            )
            return None

    async def failed(self, model: str, status: StatusLabel, settlement: Settlement | None) -> None:
        """Best effort: the client must see the upstream's error, not a storage error. A hold
        that is not given back here lapses by itself."""
        try:
            await self._push(UsageEvent.now(model=model, status=status), settlement)
        except RedisError:
            logger.warning("could not record a failed call", extra={"fields": {"status": status}})

    async def correct_later(self, estimate: Estimate) -> None:
        """Have the worker correct an estimate with OpenRouter's record. Best effort: without
        it, the estimate stands."""
        try:
            await self._estimates.add(estimate)
        except RedisError:
            logger.warning("could not queue an estimate for correction")
