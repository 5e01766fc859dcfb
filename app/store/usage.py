"""The usage event: what the API hands to the worker for each turn and each failed call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from app.clock import utc_day
from app.store import keys
from app.store.client import LuaScript, awaited, lua_script

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.usage")


class UsageEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One upstream call. `status` 200 is a committed turn; anything else a failed call."""

    at: int  # ms since the epoch
    day: str  # the UTC day of `at`, YYYY-MM-DD: the metrics bucket
    model: str
    status: int = 200
    session_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0

    @classmethod
    def at_time(cls, when: datetime, **fields: Any) -> UsageEvent:
        at = int(when.timestamp() * 1000)
        return cls(at=at, day=utc_day(at), **fields)

    @classmethod
    def now(cls, **fields: Any) -> UsageEvent:
        return cls.at_time(datetime.now(UTC), **fields)


usage_event_encoder = msgspec.json.Encoder()


class UsageInbox:
    """Failed calls and turns without a session go to the worker's inbox from here; turns of a
    session get there inside their commit."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pass_through = LuaScript(
            redis, lua_script("pass_through.lua", after=("day_tokens.lua",))
        )

    async def passed_through(self, event: UsageEvent, owner: str | None) -> int | None:
        """A turn that stores no session still counts in the metrics and, given the `owner`
        of a token limit, in the owner's tokens of the day (returned). Best effort: the
        turn was answered (and billed) whether or not Redis takes the event."""
        record = usage_event_encoder.encode(event)
        try:
            if owner is None:
                await awaited(self._redis.rpush(keys.USAGE_INBOX, record))
                return None
            used = await self._pass_through(
                keys=[keys.USAGE_INBOX, keys.owner_limit(owner)],
                args=[record, event.total_tokens],
            )
            return int(used)
        except RedisError:
            logger.warning(
                "could not record a turn's usage", extra={"fields": {"status": event.status}}
            )
            return None

    async def failed(self, model: str, status: int) -> None:
        """Best effort: the client must see the upstream's error, not a storage error."""
        event = UsageEvent.now(model=model, status=status)
        try:
            await awaited(self._redis.rpush(keys.USAGE_INBOX, usage_event_encoder.encode(event)))
        except RedisError:
            logger.warning("could not record a failed call", extra={"fields": {"status": status}})
