"""Failed authentications, remembered in Redis so that every replica refuses them alike.

- A caller's own key that OpenRouter refused (401) is remembered by its owner id (the key's
  HMAC, never the key) for REFUSED_KEY_SECONDS: the admission of the key's next turns refuses
  them again (`lua/admission.lua`), so a bearer repeated costs no upstream call.
- Failed authentications are counted per client address, in a window of a minute: past
  AUTH_FAILURES_PER_MINUTE the address gets 429. A failure found here (no key, a malformed
  one, an unknown app token) is counted as it is answered; the admission of a caller's own
  key checks the count before its turn goes upstream, since only OpenRouter can tell a random
  bearer from a key, and each one it refuses is counted too.
"""

from __future__ import annotations

import logging
import math

from redis.exceptions import RedisError

from app.errors import RateLimited
from app.store import keys
from app.store.client import LuaScript, StoreRedis, lua_script

logger = logging.getLogger("app.auth")


def too_many_failures(retry_ms: int) -> RateLimited:
    """The 429 of an address that failed to authenticate too often, until its window ends."""
    retry_after = max(math.ceil(retry_ms / 1000), 1)
    return RateLimited(
        f"too many failed authentications from this address; retry in {retry_after} s",
        retry_after=retry_after,
    )


class AuthFailures:
    def __init__(self, redis: StoreRedis, *, refused_key_seconds: int, per_minute: int) -> None:
        self._redis = redis
        self._refused_seconds = refused_key_seconds
        self._per_minute = per_minute
        self._count = LuaScript(
            redis, lua_script("count_auth_failure.lua", after=("auth_failures.lua",))
        )

    async def failed(self, address: str) -> RateLimited | None:
        """Count a failed authentication of `address`: the 429 to answer in place of its 401
        when it is one too many. Best effort: without Redis, the 401 is answered."""
        if not self._per_minute:
            return None
        try:
            count, window_left_ms = await self._count(keys=[keys.auth_failures(address)], args=[])
        except RedisError:
            logger.warning("could not count a failed authentication")
            return None
        return too_many_failures(int(window_left_ms)) if count > self._per_minute else None

    async def key_refused(self, owner: str, address: str) -> None:
        """OpenRouter answered 401 to this owner's own key, sent from `address`. Best effort:
        the client gets that 401 whether or not Redis takes the note, and the next turn asks
        OpenRouter again."""
        if self._refused_seconds:
            try:
                await self._redis.set(keys.refused_key(owner), b"1", ex=self._refused_seconds)
            except RedisError:
                logger.warning("could not remember a refused key")
        await self.failed(address)
