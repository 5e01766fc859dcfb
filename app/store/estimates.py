"""Estimated spend waiting for OpenRouter's generation record: the figures of cut streams.

A stream cut before OpenRouter's usage arrived is settled at an estimate (`app.store.spend`).
In server-key mode the worker later asks OpenRouter what the generation really cost (`GET
/generation?id=`), a few seconds after, when the record is there, and corrects the owner's day
by the difference (`lua/correct_spend.lua`). Each estimate is corrected once, whichever worker
gets to it; one that OpenRouter never reports is dropped after `MAX_TRIES`.

On a Redis Cluster the estimate (in its shard's slot) and the owner's day (in the owner's) are
two steps: the worker claims the estimate with a ZREM, then corrects the day
(`lua/correct_owner_spend.lua`). A worker that dies between them loses that one correction:
the owner's day keeps the estimate, as for a generation OpenRouter never reported. Claiming
first is what keeps a correction from counting twice.
"""

from __future__ import annotations

import msgspec

from app.clock import now_ms
from app.store import keys
from app.store.client import LuaScript, StoreRedis, awaited, layout_of, lua_script

# The functions every correction script shares.
CORRECT_LUA = ("correct_steps.lua",)
# OpenRouter's record of a generation is not there at once: 404 until it is indexed.
FIRST_TRY_MS = 5_000
MAX_TRIES = 6


class Estimate(msgspec.Struct, frozen=True, array_like=True):
    """One cut turn's estimated spend, as it was settled against its owner's day."""

    generation_id: str
    owner: str
    day: int  # UTC days since the epoch, as the owner's limit hash counts them
    tokens: int
    micro_usd: int
    tries: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Estimate)


class EstimateQueue:
    """`chat:usage:estimated` (each shard's): estimates by when they are next tried (ms), in
    the shard of their owner."""

    def __init__(self, redis: StoreRedis) -> None:
        self._redis = redis
        self._layout = layout_of(redis)
        self._correct = LuaScript(redis, lua_script("correct_spend.lua", after=CORRECT_LUA))
        self._correct_owner = LuaScript(
            redis, lua_script("correct_owner_spend.lua", after=CORRECT_LUA)
        )

    async def add(self, estimate: Estimate) -> None:
        due = now_ms() + FIRST_TRY_MS * 2**estimate.tries
        queue = self._queue(estimate.owner)
        await awaited(self._redis.zadd(queue, {_encoder.encode(estimate): due}))

    def _queue(self, owner: str) -> str:
        return self._layout.shard(owner).usage_estimated

    async def due(self, count: int) -> list[tuple[bytes, Estimate]]:
        """Up to `count` estimates due, from each shard."""
        found: list[tuple[bytes, Estimate]] = []
        for shard in self._layout.shards:
            raw: list[bytes] = await awaited(
                self._redis.zrangebyscore(shard.usage_estimated, 0, now_ms(), start=0, num=count)
            )
            found += [(member, _decoder.decode(member)) for member in raw]
        return found

    async def retry_later(self, member: bytes, estimate: Estimate) -> bool:
        """Try again later (False: tried too often, dropped)."""
        removed = await awaited(self._redis.zrem(self._queue(estimate.owner), member))
        if not removed or estimate.tries + 1 >= MAX_TRIES:
            return False
        await self.add(msgspec.structs.replace(estimate, tries=estimate.tries + 1))
        return True

    async def correct(self, member: bytes, estimate: Estimate, tokens: int, micro_usd: int) -> bool:
        """Replace the estimate by what OpenRouter reports, in the owner's day it was counted
        in (a day gone by is left as it was). False when another worker did it already."""
        queue, limit = self._queue(estimate.owner), keys.owner_limit(estimate.owner)
        delta = [estimate.day, tokens - estimate.tokens, micro_usd - estimate.micro_usd]
        if not self._layout.cluster:
            return bool(await self._correct(keys=[queue, limit], args=[member, *delta]))
        if not await awaited(self._redis.zrem(queue, member)):
            return False  # another worker claimed it
        await self._correct_owner(keys=[limit], args=delta)
        return True
