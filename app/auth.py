"""The caller: the OpenRouter key from `Authorization`, and the owner id derived from it."""

from __future__ import annotations

import hashlib
import hmac
from typing import NamedTuple

from app.errors import Unauthorized

# OpenRouter keys are `sk-or-v1-` and 64 hex digits; leave room for other formats, not for abuse.
MAX_KEY_LENGTH = 256


class ApiKey:
    """An OpenRouter key. Its repr hides it, so no log line or traceback can carry it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__


class Caller(NamedTuple):
    """Who is calling: the key to forward upstream and the owner id sessions are kept under."""

    key: ApiKey
    owner: str


def owner_id(key: str, secret: bytes) -> str:
    """HMAC-SHA256 of the key under the server secret: stable, and not reversible to the key."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]


def caller_from_authorization(header: str | None, secret: bytes) -> Caller:
    """Parse `Authorization: Bearer <key>`; anything else is a 401."""
    if not header:
        raise Unauthorized(
            "missing Authorization header: send your OpenRouter key as `Bearer <key>`"
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("malformed Authorization header: expected `Bearer <key>`")
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable() or " " in key:
        raise Unauthorized("malformed Authorization header: the key is not a valid token")
    return Caller(key=ApiKey(key), owner=owner_id(key, secret))
