"""The usage event: what the API hands to the worker for each turn and each failed call."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisError

from app import keys
from app.storage import awaited

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.usage")


class UsageEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One upstream call. `status` 200 is a committed turn; anything else a failed call."""

    at: int  # ms since the epoch
    model: str
    status: int = 200
    session_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0


usage_event_encoder = msgspec.json.Encoder()
usage_event_decoder = msgspec.json.Decoder(UsageEvent)


class UsageInbox:
    """Failed calls go to the worker's inbox; committed turns get there inside the commit."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def failed(self, model: str, status: int) -> None:
        """Best effort: the client must see the upstream's error, not a storage error."""
        event = UsageEvent(at=time.time_ns() // 1_000_000, model=model, status=status)
        try:
            await awaited(self._redis.rpush(keys.USAGE_INBOX, usage_event_encoder.encode(event)))
        except RedisError:
            logger.warning("could not record a failed call", extra={"fields": {"status": status}})
