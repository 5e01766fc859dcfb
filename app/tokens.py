"""App tokens: what clients send in server-key mode, configured as digests in APP_TOKENS.

`APP_TOKENS` is a comma-separated list of
`name:sha256hex[:turns_per_minute[:tokens_per_day[:usd_per_day]]]` entries. The server keeps
only digests, so its configuration does not hold a usable token; an empty limit field takes the
server's default, 0 lifts that limit for the token.

    chat-backend token new web        # a fresh token, and its APP_TOKENS entry
    chat-backend token hash < file    # the digest of a token read from stdin
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DIGEST = re.compile(r"[0-9a-f]{64}")
ENTRY_FORMAT = "name:sha256hex[:turns_per_minute[:tokens_per_day[:usd_per_day]]]"


class AppToken(msgspec.Struct, kw_only=True, frozen=True):
    """One configured app token: its name (for logs), its digest, and its own limits."""

    name: str
    digest: str
    turns_per_minute: int | None = None  # None: RATE_LIMIT_PER_MINUTE
    tokens_per_day: int | None = None  # None: TOKEN_LIMIT_PER_DAY
    usd_per_day: float | None = None  # None: BUDGET_USD_PER_DAY


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_token(tokens: Sequence[AppToken], token: str) -> AppToken | None:
    """The entry whose digest is the token's, comparing every entry in constant time."""
    digest = token_digest(token).encode()
    found = None
    for entry in tokens:
        if hmac.compare_digest(digest, entry.digest.encode()):
            found = entry
    return found


def _limit(text: str, what: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} must be a whole number >= 0, not {text!r}")
    return int(text)


def _dollars(text: str, what: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value <= 1e6):  # also refuses nan
        raise ValueError(f"{what} must be an amount of USD >= 0, not {text!r}")
    return value


def _entry(position: int, text: str) -> AppToken:
    fields = text.split(":")
    name = fields[0]
    where = f"entry {position} ({name!r})" if NAME.fullmatch(name) else f"entry {position}"
    if len(fields) < 2 or len(fields) > 5:
        raise ValueError(f"{where}: expected {ENTRY_FORMAT}")
    if not NAME.fullmatch(name):
        raise ValueError(f"{where}: the name must match {NAME.pattern}")
    if not DIGEST.fullmatch(fields[1]):
        raise ValueError(
            f"{where}: the digest must be 64 lowercase hex digits "
            "(chat-backend token hash prints it)"
        )
    limits = [*fields[2:], "", "", ""]
    return AppToken(
        name=name,
        digest=fields[1],
        turns_per_minute=_limit(limits[0], f"{where}: turns_per_minute"),
        tokens_per_day=_limit(limits[1], f"{where}: tokens_per_day"),
        usd_per_day=_dollars(limits[2], f"{where}: usd_per_day"),
    )


def parse_app_tokens(text: str) -> tuple[AppToken, ...]:
    """Parse APP_TOKENS; a `ValueError` names the entry at fault (never its digest)."""
    entries = [part.strip() for part in text.split(",")]
    tokens = tuple(_entry(n, part) for n, part in enumerate(entries, 1) if part)
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ValueError("two entries have the same name")
    if len({token.digest for token in tokens}) != len(tokens):
        raise ValueError("two entries have the same digest")
    return tokens


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "new" and NAME.fullmatch(argv[1]):
        token = secrets.token_urlsafe(32)
        print(f"token (give it to the client):  {token}")
        print(f"APP_TOKENS entry:               {argv[1]}:{token_digest(token)}")
        return 0
    if argv == ["hash"]:
        # From stdin, not argv: a token on the command line ends up in shell history and ps.
        token = sys.stdin.readline().strip()
        if not token:
            print("hash: no token on stdin", file=sys.stderr)
            return 2
        print(token_digest(token))
        return 0
    print("usage: chat-backend token new NAME | token hash < FILE", file=sys.stderr)
    return 2
