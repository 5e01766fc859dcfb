"""Per-owner limits on turns, tokens and spend, shared by every replica through Redis.

A turn is admitted atomically (`lua/admission.lua`), in the same script that reads the turn's
history (`lua/open_turn.lua`), or alone for a turn that reads none (`admit_turn.lua`). The
admission keeps the turns-per-minute limit as a token bucket (GCRA) and holds the turn's worst
case against the day's tokens and budget; the turn's end settles it to what it spent
(`settle.lua`, in the commit or in `pass_through.lua`). In the same step it refuses a caller's
own key that OpenRouter refused a short while ago (`app.store.auth_failures`), so that check
costs a turn no round trip of its own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import RedisError

from app.errors import RateLimited, UpstreamError
from app.store import keys
from app.store.client import LuaScript, lua_script
from app.store.spend import FREE, MICROS, Prices

if TYPE_CHECKING:
    from redis.asyncio import Redis


class Limits(NamedTuple):
    """One owner's limits; 0 is no limit."""

    turns_per_minute: int
    tokens_per_day: int
    micro_usd_per_day: int = 0

    @property
    def active(self) -> bool:
        return bool(self.turns_per_minute or self.tokens_per_day or self.micro_usd_per_day)


NO_LIMITS = Limits(0, 0, 0)
# What refused a turn beyond its limits (the 8th field of the admission's reply): its key,
# which OpenRouter refused a short while ago.
KEY_REFUSED = 4


class TurnWant(NamedTuple):
    """What a turn asks to hold: its id, the bytes of its prompt that Redis does not hold (the
    stored history is counted by the script), its `max_tokens` and its model's prices."""

    turn_id: str
    prompt_bytes: int
    max_tokens: int
    prices: Prices = FREE


def _seconds(ms: int) -> int:
    return math.ceil(ms / 1000)


class Quota:
    """Where an owner stands after the admission of a turn: what the response headers say."""

    __slots__ = ("day_left_ms", "limits", "reset_ms", "spent", "tokens_used", "turns_left")

    def __init__(
        self,
        limits: Limits,
        *,
        turns_left: int,
        reset_ms: int,
        tokens_used: int,
        day_left_ms: int,
        spent: int = 0,
    ) -> None:
        self.limits = limits
        self.turns_left = turns_left
        self.reset_ms = reset_ms
        self.tokens_used = tokens_used  # settled and held today
        self.day_left_ms = day_left_ms
        self.spent = spent  # micro-USD settled and held today

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
        if budget := self.limits.micro_usd_per_day:
            out += [
                (b"x-budget-limit-usd", _usd(budget)),
                (b"x-budget-remaining-usd", _usd(max(budget - self.spent, 0))),
                (b"x-budget-reset", b"%d" % _seconds(self.day_left_ms)),
            ]
        return out


def _usd(micro_usd: int) -> bytes:
    return b"%.6f" % (micro_usd / MICROS)


class QuotaSlot:
    """Filled by the admission of a turn, read when the response headers are sent."""

    __slots__ = ("quota",)

    def __init__(self) -> None:
        self.quota: Quota | None = None


def admission_keys(owner: str) -> list[str]:
    """KEYS of the admission scripts: the owner's limit hash, its holds, its refused-key note."""
    return [keys.owner_limit(owner), keys.owner_holds(owner), keys.refused_key(owner)]


def admission_args(limits: Limits, want: TurnWant, *, check_refused: bool = False) -> list[str]:
    """ARGV of the admission scripts (admit_turn.lua has their order)."""
    prices = want.prices
    return [
        str(limits.turns_per_minute),
        str(limits.tokens_per_day),
        str(limits.micro_usd_per_day),
        want.turn_id,
        str(want.prompt_bytes),
        str(want.max_tokens),
        repr(prices.prompt),
        repr(prices.completion),
        repr(prices.request),
        "1" if check_refused else "0",
    ]


def _refusal(limits: Limits, reason: int, used: int, spent: int, retry_after: int) -> str:
    if reason == 2:
        message = (
            f"token limit reached: {used} of {limits.tokens_per_day} tokens used or held by "
            "turns in flight today (UTC)"
        )
    elif reason == 3:
        message = (
            f"budget reached: {_usd(spent).decode()} of {_usd(limits.micro_usd_per_day).decode()}"
            " USD spent or held by turns in flight today (UTC)"
        )
    else:
        message = f"rate limit reached: {limits.turns_per_minute} turns per minute"
    return f"{message}; retry in {retry_after} s"


class Admission:
    """The admission of one turn: run on its own, or by the script that reads its session."""

    __slots__ = ("_limits", "_refused_seconds", "_script", "_slot", "args", "keys")

    def __init__(
        self,
        script: LuaScript,
        owner: str,
        limits: Limits,
        slot: QuotaSlot,
        want: TurnWant,
        *,
        refused_seconds: int,
    ) -> None:
        self._script = script
        self.keys = admission_keys(owner)
        self.args = admission_args(limits, want, check_refused=bool(refused_seconds))
        self._limits = limits
        self._slot = slot
        self._refused_seconds = refused_seconds

    async def run(self) -> None:
        try:
            reply = await self._script(keys=self.keys, args=self.args)
        except RedisError:
            if self._limits.active:
                raise  # a limit that lets turns through while Redis is away is no limit
            # Only a refused key was to be checked: OpenRouter checks the key itself.
            return
        await self.settle(reply)

    async def settle(self, reply: Any) -> None:
        """Record the quota of the script's answer; raise `RateLimited` if it refused the turn
        for its limits, OpenRouter's 401 again if for its key."""
        admitted, turns_left, reset_ms, retry_ms, used, day_left_ms, spent, reason = map(int, reply)
        if reason == KEY_REFUSED:
            raise UpstreamError(
                401,
                "upstream_unauthorized",
                f"OpenRouter refused this key within the last {self._refused_seconds} s; it "
                "is not sent to OpenRouter again before then",
                upstream_status=401,
            )
        self._slot.quota = Quota(
            self._limits,
            turns_left=turns_left,
            reset_ms=reset_ms,
            tokens_used=used,
            day_left_ms=day_left_ms,
            spent=spent,
        )
        if admitted:
            return
        retry_after = max(_seconds(retry_ms), 1)
        raise RateLimited(
            _refusal(self._limits, reason, used, spent, retry_after), retry_after=retry_after
        )


class RateLimiter:
    """Admissions for the owners whose limits are set, and for callers' own keys while
    refused keys are remembered (`refused_key_seconds`)."""

    def __init__(self, redis: Redis, *, refused_key_seconds: int) -> None:
        self._script = LuaScript(redis, lua_script("admit_turn.lua", after=("admission.lua",)))
        self._refused_seconds = refused_key_seconds

    def admission(
        self, owner: str, limits: Limits, slot: QuotaSlot, want: TurnWant, *, own_key: bool
    ) -> Admission | None:
        """None when nothing is to be checked: no limits, and no caller's own key to check."""
        refused_seconds = self._refused_seconds if own_key else 0
        if not limits.active and not refused_seconds:
            return None
        return Admission(self._script, owner, limits, slot, want, refused_seconds=refused_seconds)
