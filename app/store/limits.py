"""Per-owner limits on turns, tokens and spend, shared by every replica through Redis.

A turn is admitted atomically (`lua/admission.lua`), in the same script that reads the turn's
history (`lua/open_turn.lua`), or alone for a turn that reads none (`admit_turn.lua`). The
admission keeps the turns-per-minute limit as a token bucket (GCRA) and holds the turn's worst
case against the day's tokens and budget; the turn's end settles it to what it spent
(`settle.lua`, in the commit or in `pass_through.lua`). In the same step, for a caller's own
key, it refuses a key that OpenRouter refused a short while ago and a client address that
failed to authenticate too often (`app.store.auth_failures`), so those checks cost a turn no
round trip of their own.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from app.errors import RateLimited, UpstreamError
from app.store import keys
from app.store.auth_failures import too_many_failures
from app.store.client import LuaScript, StoreRedis, layout_of, lua_script
from app.store.spend import FREE, MICROS, Prices


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
# which OpenRouter refused a short while ago, or its address, which failed too often.
KEY_REFUSED, ADDRESS_REFUSED = 4, 5
# The scripts an admission rides in are written after these (Redis scripts share no code).
ADMISSION_LUA = ("auth_failures.lua", "admission.lua")


class Guard(NamedTuple):
    """The checks of who calls, before a turn with a caller's own key goes upstream: 0 skips
    one. Turns with the server's key have none: an app token is checked here, not upstream."""

    refused_key_seconds: int  # a key OpenRouter refused is refused again for this long
    failures_per_minute: int  # failed authentications an address may have in its minute

    @property
    def active(self) -> bool:
        return bool(self.refused_key_seconds or self.failures_per_minute)


NO_GUARD = Guard(0, 0)


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


def admission_keys(owner: str, address: str) -> list[str]:
    """KEYS of the admission scripts: the owner's limit hash, its holds and its refused-key
    note, the client address's failed authentications."""
    return [
        keys.owner_limit(owner),
        keys.owner_holds(owner),
        keys.refused_key(owner),
        keys.auth_failures(address),
    ]


def admission_args(limits: Limits, want: TurnWant, guard: Guard = NO_GUARD) -> list[str]:
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
        "1" if guard.refused_key_seconds else "0",
        str(guard.failures_per_minute),
    ]


_NO_WANT = TurnWant("", 0, 0)


def unchecked(owner: str) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of an admission script that checks nothing (nor reads its keys)."""
    return admission_keys(owner, "none"), admission_args(NO_LIMITS, _NO_WANT)


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

    __slots__ = ("_guard", "_limiter", "_limits", "_slot", "args", "keys")

    def __init__(
        self,
        limiter: RateLimiter,
        owner: str,
        address: str,
        limits: Limits,
        slot: QuotaSlot,
        want: TurnWant,
        guard: Guard,
    ) -> None:
        self._limiter = limiter
        self.keys = admission_keys(owner, address)
        self.args = admission_args(limits, want, guard)
        self._limits = limits
        self._slot = slot
        self._guard = guard

    @property
    def address_key(self) -> str | None:
        """The address's failed authentications, to read beside the owner's part on a Redis
        Cluster (they are in another slot); None when not checked."""
        return self.keys[3] if self._guard.failures_per_minute else None

    async def run(self) -> None:
        try:
            if self._limiter.cluster:
                failures = None
                if self.address_key is not None:
                    async with self._limiter.redis.pipeline(transaction=False) as pipe:
                        pipe.get(self.address_key)
                        pipe.pttl(self.address_key)
                        failures = await pipe.execute()
                await self.run_owner_part(0, failures)
                return
            reply = await self._limiter.script(keys=self.keys, args=self.args)
        except RedisError:
            if self._limits.active:
                raise  # a limit that lets turns through while Redis is away is no limit
            # Only who calls was to be checked, and OpenRouter checks the key itself.
            return
        await self.settle(reply)

    async def run_owner_part(self, history_bytes: int, failures: list[Any] | None) -> None:
        """The admission on a Redis Cluster, in the owner's slot: the address's failures
        (`failures`: the GET and PTTL of `address_key`, read beforehand) checked here, and
        the refusal of a key counted as one more of them afterwards, in the address's slot.
        `history_bytes`: the stored history's, read beforehand, counted in the hold."""
        limit = self._guard.failures_per_minute
        if limit and failures is not None and int(failures[0] or 0) >= limit:
            raise too_many_failures(max(int(failures[1]), 1))
        args = list(self.args)
        args[4] = str(int(args[4]) + history_bytes)
        args[10] = "0"  # the address is checked here, not by the script
        reply = await self._limiter.script(keys=self.keys[:3], args=args)
        if limit and int(reply[7]) == KEY_REFUSED:
            await self._limiter.count_failure(keys=[self.keys[3]], args=[])
        await self.settle(reply)

    async def settle(self, reply: Any) -> None:
        """Record the quota of the script's answer; raise `RateLimited` if it refused the turn
        for its limits or its address, OpenRouter's 401 again if for its key."""
        admitted, turns_left, reset_ms, retry_ms, used, day_left_ms, spent, reason = map(int, reply)
        if reason == ADDRESS_REFUSED:
            raise too_many_failures(retry_ms)
        if reason == KEY_REFUSED:
            raise UpstreamError(
                401,
                "upstream_unauthorized",
                f"OpenRouter refused this key within the last {self._guard.refused_key_seconds}"
                " s; it is not sent to OpenRouter again before then",
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
    """Admissions for the owners whose limits are set, and for callers' own keys while their
    `guard` checks anything."""

    def __init__(self, redis: StoreRedis, guard: Guard) -> None:
        self.redis = redis
        self.cluster = layout_of(redis).cluster
        self.script = LuaScript(redis, lua_script("admit_turn.lua", after=ADMISSION_LUA))
        self.count_failure = LuaScript(
            redis, lua_script("count_auth_failure.lua", after=("auth_failures.lua",))
        )
        self._guard = guard

    def admission(
        self,
        owner: str,
        address: str,
        limits: Limits,
        slot: QuotaSlot,
        want: TurnWant,
        *,
        own_key: bool,
    ) -> Admission | None:
        """None when nothing is to be checked: no limits, and no caller's own key to guard."""
        guard = self._guard if own_key else NO_GUARD
        if not limits.active and not guard.active:
            return None
        return Admission(self, owner, address, limits, slot, want, guard)
