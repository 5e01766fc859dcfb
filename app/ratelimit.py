"""Per-owner limits on turns, shared by every replica through one Redis hash per owner.

A turn is admitted and counted in one atomic script (`lua/admit_turn.lua`) that rides in the
same round trip as the turn's history read. The script keeps the turns-per-minute limit as a
token bucket (GCRA) and reads the day's token count, which the commit script adds to.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import NoScriptError

from app import keys
from app.errors import RateLimited
from app.storage import lua_script

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript


class Limits(NamedTuple):
    """One owner's limits; 0 is no limit."""

    turns_per_minute: int
    tokens_per_day: int

    @property
    def active(self) -> bool:
        return bool(self.turns_per_minute or self.tokens_per_day)


NO_LIMITS = Limits(0, 0)


def _seconds(ms: int) -> int:
    return math.ceil(ms / 1000)


class Quota:
    """Where an owner stands after the admission of a turn: what the response headers say."""

    __slots__ = ("day_left_ms", "limits", "reset_ms", "tokens_used", "turns_left")

    def __init__(
        self, limits: Limits, *, turns_left: int, reset_ms: int, tokens_used: int, day_left_ms: int
    ) -> None:
        self.limits = limits
        self.turns_left = turns_left
        self.reset_ms = reset_ms
        self.tokens_used = tokens_used
        self.day_left_ms = day_left_ms

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`X-RateLimit-*` for turns, `X-RateLimit-*-Tokens` for tokens; resets in seconds."""
        out: list[tuple[str, int]] = []
        if self.limits.turns_per_minute:
            out += [
                ("x-ratelimit-limit", self.limits.turns_per_minute),
                ("x-ratelimit-remaining", self.turns_left),
                ("x-ratelimit-reset", _seconds(self.reset_ms)),
            ]
        if tokens := self.limits.tokens_per_day:
            out += [
                ("x-ratelimit-limit-tokens", tokens),
                ("x-ratelimit-remaining-tokens", max(tokens - self.tokens_used, 0)),
                ("x-ratelimit-reset-tokens", _seconds(self.day_left_ms)),
            ]
        return [(name.encode(), str(value).encode()) for name, value in out]


class QuotaSlot:
    """Filled by the admission of a turn, read when the response headers are sent."""

    __slots__ = ("quota",)

    def __init__(self) -> None:
        self.quota: Quota | None = None


class Admission:
    """The admission of one turn: queued on a pipeline, or run on its own."""

    __slots__ = ("_args", "_keys", "_limits", "_script", "_slot")

    def __init__(self, script: AsyncScript, owner: str, limits: Limits, slot: QuotaSlot) -> None:
        self._script = script
        self._keys = [keys.owner_limit(owner)]
        self._args = [str(limits.turns_per_minute), str(limits.tokens_per_day)]
        self._limits = limits
        self._slot = slot

    def queue(self, pipe: Pipeline) -> None:
        """EVALSHA, not the script object: that would cost the pipeline a SCRIPT EXISTS trip."""
        pipe.evalsha(self._script.sha, len(self._keys), *self._keys, *self._args)

    async def run(self) -> None:
        await self.settle(await self._script(keys=self._keys, args=self._args))

    async def settle(self, reply: Any) -> None:
        """Record the quota; raise `RateLimited` if the turn was refused.

        `reply` is the pipeline's answer, or the NOSCRIPT error of a Redis that lost its
        scripts (a restart), which loads the script and runs it.
        """
        if isinstance(reply, NoScriptError):
            reply = await self._script(keys=self._keys, args=self._args)
        elif isinstance(reply, Exception):
            raise reply
        admitted, turns_left, reset_ms, retry_ms, tokens_used, day_left_ms = map(int, reply)
        self._slot.quota = Quota(
            self._limits,
            turns_left=turns_left,
            reset_ms=reset_ms,
            tokens_used=tokens_used,
            day_left_ms=day_left_ms,
        )
        if admitted:
            return
        retry_after = max(_seconds(retry_ms), 1)
        if self._limits.tokens_per_day and tokens_used >= self._limits.tokens_per_day:
            message = (
                f"token limit reached: {tokens_used} of {self._limits.tokens_per_day} tokens "
                "used today (UTC)"
            )
        else:
            message = f"rate limit reached: {self._limits.turns_per_minute} turns per minute"
        raise RateLimited(f"{message}; retry in {retry_after} s", retry_after=retry_after)


class RateLimiter:
    """Admissions for the owners whose limits are set."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(lua_script("app", "admit_turn.lua"))

    def admission(self, owner: str, limits: Limits, slot: QuotaSlot) -> Admission | None:
        return Admission(self._script, owner, limits, slot) if limits.active else None
