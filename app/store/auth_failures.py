"""Failed authentications, remembered in Redis so that every replica refuses them alike.

A caller's own key that OpenRouter refused (401) is remembered by its owner id (the key's
HMAC, never the key) for REFUSED_KEY_SECONDS: the admission of the key's next turns refuses
them again (`lua/admission.lua`), and a random bearer repeated costs no upstream call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from app.store import keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("app.auth")


class AuthFailures:
    def __init__(self, redis: Redis, *, refused_key_seconds: int) -> None:
        self._redis = redis
        self._refused_seconds = refused_key_seconds

    async def key_refused(self, owner: str) -> None:
        """OpenRouter answered 401 to this owner's own key. Best effort: the client gets that
        401 whether or not Redis takes the note, and the next turn asks OpenRouter again."""
        if not self._refused_seconds:
            return
        try:
            await self._redis.set(keys.refused_key(owner), b"1", ex=self._refused_seconds)
        except RedisError:
            logger.warning("could not remember a refused key")
