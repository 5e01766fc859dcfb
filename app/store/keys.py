"""The Redis key layout: a documented interface that operators read with redis-cli.

A session is named in Redis by its owner and its id, `<owner>:<session_id>` (`session_ref`):
two owners can both use the id `default`, and no lookup of one reaches the other's. Every key
of one session shares the hash tag `{<owner>:<session_id>}`, so a Redis Cluster keeps them in
one slot. Session ids are validated against `^[A-Za-z0-9_-]{1,64}$` and owners are 32 hex
digits before they get here, so user input never adds key syntax.
"""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "chat"

# Sorted set: session ref (`<owner>:<session_id>`) -> last activity (ms since the epoch), every
# session.
ALL_SESSIONS = f"{PREFIX}:sessions"
# Sorted set: owner id -> last activity (ms); the pruner walks it to clean owner indexes.
OWNERS = f"{PREFIX}:owners"
# Hash: the shared copy of OpenRouter's model list (`body`, `etag`, `fetched_at`).
MODELS = f"{PREFIX}:models"
# String with a short TTL: held by the one replica refreshing the model list.
MODELS_REFRESH_LOCK = f"{PREFIX}:models:refresh"
# List: usage records of committed turns and failed calls, drained by the worker.
USAGE_INBOX = f"{PREFIX}:usage:inbox"
# List, capped at USAGE_DEAD_CAP: the inbox events the worker could not apply, newest last,
# each `{"reason", "event" (as it was in the inbox), "at" (ms)}`.
USAGE_DEAD = f"{PREFIX}:usage:dead"
USAGE_DEAD_CAP = 1000
# String: how many events went to USAGE_DEAD, in all.
USAGE_DEAD_COUNT = f"{PREFIX}:usage:dead:count"
# Sorted set: cut streams' estimated spend (app.store.estimates.Estimate as JSON) -> ms when
# the worker next asks OpenRouter for its generation record (server-key mode).
USAGE_ESTIMATED = f"{PREFIX}:usage:estimated"
# String with a TTL: the worker's heartbeat (unix seconds of its last beat).
WORKER_HEARTBEAT = f"{PREFIX}:worker:heartbeat"


class SessionKeys(NamedTuple):
    """The keys one session owns; all carry the session's TTL."""

    meta: str  # hash: owner, created, updated, model, title, system_prompt, counters
    messages: str  # list: one JSON object per message, oldest first
    turns: str  # list: ids of the latest committed turns, so a retried commit applies once
    usage: str  # hash: usage totals, written by the worker

    @property
    def deleted(self) -> str:
        """String with a short TTL: the request id of the delete that removed the session."""
        return self.meta.removesuffix(":meta") + ":deleted"


def session_ref(owner: str, session_id: str) -> str:
    """A session's name in Redis: its owner and its id (the owner's hex has no `:`)."""
    return f"{owner}:{session_id}"


def split_ref(ref: str) -> tuple[str, str]:
    """The owner and the session id of a session ref."""
    owner, _, session_id = ref.partition(":")
    return owner, session_id


def session_keys(ref: str) -> SessionKeys:
    """The keys of the session `ref` (`session_ref`)."""
    tag = f"{PREFIX}:{{{ref}}}"
    return SessionKeys(
        meta=f"{tag}:meta",
        messages=f"{tag}:messages",
        turns=f"{tag}:turns",
        usage=f"{tag}:usage",
    )


def owner_sessions(owner: str) -> str:
    """Sorted set: the owner's session ids -> last activity (ms)."""
    return f"{PREFIX}:owner:{owner}:sessions"


def owner_limit(owner: str) -> str:
    """Hash: the owner's limit state: `tat` (ms when its turn bucket is full again); the UTC
    day's settled counts (`day`, days since the epoch; `tokens`; `cost`, micro-USD); what the
    turns in flight hold (`held_tokens`, `held_cost`, and `h:<turn id>` = "<tokens> <cost>"
    for each).

    Tagged `{<owner>}`, like `owner_holds`, so the admission script touches one slot. Its TTL
    runs until the bucket is full, the day ends while spend is counted, or a hold lapses.
    """
    return f"{PREFIX}:limit:{{{owner}}}"


def owner_holds(owner: str) -> str:
    """Sorted set: the owner's turns in flight -> ms when their hold lapses; settled turns ->
    minus ms when their mark lapses (a replayed admission or settle finds its turn here)."""
    return f"{PREFIX}:limit:{{{owner}}}:holds"


def refused_key(owner: str) -> str:
    """String with a TTL of REFUSED_KEY_SECONDS: OpenRouter answered 401 to the owner's own key
    (bring-your-own-key mode), and the turns of that key are refused without asking it again.

    Tagged `{<owner>}` like the owner's limit hash, so the admission script reads both in one
    slot.
    """
    return f"{PREFIX}:refused:{{{owner}}}"


def auth_failures(address: str) -> str:
    """String with a TTL of a minute from its first count: the failed authentications of one
    client address (`app.turns.callers.client_address`: an IPv4 address, an IPv6 /64, or
    `unknown`, never other text)."""
    return f"{PREFIX}:authfail:{{{address}}}"


def daily_metrics(day: str) -> str:
    """Hash: global metrics of one UTC day (`YYYY-MM-DD`), fields `<model>|<counter>`."""
    return f"{PREFIX}:metrics:{day}"
