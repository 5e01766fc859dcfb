"""The caller: who sends a request, which key goes upstream for it, and its limits.

Two modes. Bring-your-own-key (no OPENROUTER_API_KEY): the bearer token is the caller's own
OpenRouter key, forwarded upstream. Server-key (OPENROUTER_API_KEY set): the bearer token is an
app token from APP_TOKENS, and the server's key goes upstream. Either way the owner of the
caller's sessions is the HMAC of the bearer token, and the token itself is kept nowhere.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING

from app.errors import Unauthorized
from app.store.limits import Limits, QuotaSlot
from app.store.spend import micros
from app.tokens import find_token

if TYPE_CHECKING:
    from app.settings import Settings

# OpenRouter keys are `sk-or-v1-` and 64 hex digits; leave room for other formats, not for abuse.
MAX_KEY_LENGTH = 256
# What failed authentications of a request whose client is not an IP address count under.
UNKNOWN_ADDRESS = "unknown"
# One subscriber's usual IPv6 allocation: its addresses are one client's, by the million.
IPV6_CLIENT_PREFIX = 64


class ApiKey:
    """An OpenRouter key. Its repr hides it, so no log line or traceback can carry it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__


@functools.lru_cache(maxsize=4096)
def client_address(host: str | None) -> str:
    """The address a client's failed authentications count under: its IPv4 address (an IPv6
    one that maps it included), its IPv6 /64, or `unknown`. The request's client is what the
    server saw, or what a trusted proxy said (FORWARDED_ALLOW_IPS): text that must not become
    a key of its own."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return UNKNOWN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


class Caller:
    """One request's caller. `quota` is filled when a turn is admitted (for the headers)."""

    __slots__ = ("address", "key", "limits", "name", "owner", "quota")

    def __init__(
        self,
        *,
        key: ApiKey,
        owner: str,
        limits: Limits,
        address: str,
        name: str | None = None,
    ) -> None:
        self.key = key  # what goes upstream: the caller's own key, or the server's
        self.owner = owner  # the owner id of the caller's sessions
        self.limits = limits
        self.address = address  # the client's, as `client_address` gives it
        self.name = name  # the app token's name, for logs (server-key mode)
        self.quota = QuotaSlot()

    @property
    def uses_server_key(self) -> bool:
        return self.name is not None

    def __repr__(self) -> str:
        return f"Caller(owner={self.owner!r}, name={self.name!r})"


def owner_id(key: str, secret: bytes) -> str:
    """HMAC-SHA256 of the key under the server secret: stable, and not reversible to the key."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]


def bearer_token(header: str | None, what: str) -> str:
    """The token of `Authorization: Bearer <token>`; anything else is a 401."""
    if not header:
        raise Unauthorized(f"missing Authorization header: send your {what} as `Bearer <key>`")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("malformed Authorization header: expected `Bearer <key>`")
    if (
        len(token) > MAX_KEY_LENGTH
        or not token.isascii()
        or not token.isprintable()
        or " " in token
    ):
        raise Unauthorized("malformed Authorization header: the key is not a valid token")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether `Authorization: Bearer <token>` names `token` (an operator's ADMIN_TOKEN or
    METRICS_TOKEN), compared in constant time so it cannot be guessed byte by byte."""
    scheme, _, given = (header or "").partition(" ")
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and matches


class Authenticator:
    """Turns an `Authorization` header into a `Caller`, in the server's mode."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.session_secret.encode()
        self._server_key = ApiKey(settings.openrouter_api_key) if settings.server_key_mode else None
        self._tokens = settings.app_tokens
        self._limits = Limits(
            settings.rate_limit_per_minute,
            settings.token_limit_per_day,
            micros(settings.budget_usd_per_day),
        )

    def caller(self, header: str | None, address: str) -> Caller:
        """The caller `header` names, sending from `address` (`client_address`); `Unauthorized`
        when it names none."""
        if self._server_key is None:
            key = bearer_token(header, "OpenRouter key")
            return Caller(
                key=ApiKey(key),
                owner=owner_id(key, self._secret),
                limits=self._limits,
                address=address,
            )
        token = bearer_token(header, "app token")
        app = find_token(self._tokens, token)
        if app is None:
            raise Unauthorized("unknown app token")
        limits = Limits(
            self._limits.turns_per_minute if app.turns_per_minute is None else app.turns_per_minute,
            self._limits.tokens_per_day if app.tokens_per_day is None else app.tokens_per_day,
            self._limits.micro_usd_per_day if app.usd_per_day is None else micros(app.usd_per_day),
        )
        return Caller(
            key=self._server_key,
            owner=owner_id(token, self._secret),
            limits=limits,
            address=address,
            name=app.name,
        )
