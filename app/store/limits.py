"""Per-owner limits on turns, shared by every replica through one Redis hash per owner.

A turn is admitted and counted atomically (`lua/admission.lua`), in the same script that reads
the turn's history (`lua/open_turn.lua`), or alone for a turn that reads none
(`admit_turn.lua`). The admission keeps the turns-per-minute limit as a token bucket (GCRA)
and reads the day's token count, which the commit script adds to.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from app.errors import RateLimited
from app.store import keys
from app.store.client import LuaScript, lua_script

if TYPE_CHECKING:
    from redis.asyncio import Redis


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
        out: list[tuple[bytes, bytes]] = []
        if turns := self.limits.turns_per_minute:
            out += [
                (b"x-ratelimit-limit", b"%d" % turns),
                (b"x-ratelimit-remaining", b"%d" % self.turns_left),
                (b"x-ratelimit-reset", b"%d" % _seconds(self.reset_ms)),
            ]
        if tokens := self.limits.tokens_per_day:
            out += [
                (b"x-ratelimit-limit-tokens", b"%d" % tokens),
                (b"x-ratelimit-remaining-tokens", b"%d" % max(tokens - self.tokens_used, 0)),
                (b"x-ratelimit-reset-tokens", b"%d" % _seconds(self.day_left_ms)),
            ]
        return out


class QuotaSlot:
    """Filled by the admission of a turn, read when the response headers are sent."""

    __slots__ = ("quota",)

    def __init__(self) -> None:
        self.quota: Quota | None = None


def admission_args(limits: Limits) -> list[str]:
    """ARGV of the admission scripts: turns per minute, tokens per day (0: no limit)."""
    return [str(limits.turns_per_minute), str(limits.tokens_per_day)]


class Admission:
    """The admission of one turn: run on its own, or by the script that reads its session."""

    __slots__ = ("_limits", "_script", "_slot", "args", "keys")

    def __init__(self, script: LuaScript, owner: str, limits: Limits, slot: QuotaSlot) -> None:
        self._script = script
        self.keys = [keys.owner_limit(owner)]
        self.args = admission_args(limits)
        self._limits = limits
        self._slot = slot

    async def run(self) -> None:
        await self.settle(await self._script(keys=self.keys, args=self.args))

    async def settle(self, reply: Any) -> None:
        """Record the quota of the script's answer; raise `RateLimited` if it refused the turn."""
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
        self._script = LuaScript(redis, lua_script("admit_turn.lua", after=("admission.lua",)))

    def admission(self, owner: str, limits: Limits, slot: QuotaSlot) -> Admission | None:
        return Admission(self._script, owner, limits, slot) if limits.active else None
