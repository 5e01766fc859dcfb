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

# Hash: the shared copy of OpenRouter's model list (`body`, `etag`, `fetched_at`).
MODELS = f"{PREFIX}:models"
# String with a short TTL: held by the one replica refreshing the model list.
MODELS_REFRESH_LOCK = f"{PREFIX}:models:refresh"
# How many events each shard's `usage_dead` list keeps.
USAGE_DEAD_CAP = 1000
# String with a TTL: the worker's heartbeat (unix seconds of its last beat).
WORKER_HEARTBEAT = f"{PREFIX}:worker:heartbeat"


class SessionKeys(NamedTuple):
    """The keys one session owns; all carry the session's TTL."""

    meta: str  # hash: owner, created, updated, model, title, system_prompt, counters
    messages: str  # list: one JSON object per message, oldest first
    turns: str  # list: ids of the latest committed turns, so a retried commit applies once
    # hash: usage totals, written by the worker (on a cluster also `applied_seq`: the sequence
    # number of the last pending event counted, lua/apply_session_usage.lua)
    usage: str

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


# The shards of the global structures on a Redis Cluster: a fixed number, so the worker knows
# them all. An owner's turns always go to the same shard (`Layout.shard`).
CLUSTER_SHARDS = 16


class Shard(NamedTuple):
    """One shard of the structures every session shares, its keys all in one slot on a Redis
    Cluster (suffix `:{<nn>}`, nn from 00 to 15); a standalone Redis has one shard, its keys
    without a suffix."""

    # Sorted set: session ref (`<owner>:<session_id>`) -> last activity (ms).
    all_sessions: str
    # Sorted set: owner id -> last activity (ms); the pruner walks it to clean owner indexes.
    owners: str
    # List: usage records of committed turns and failed calls, drained by the worker.
    usage_inbox: str
    # List, capped at USAGE_DEAD_CAP: the inbox events the worker could not apply, newest
    # last, each `{"reason", "event" (as it was in the inbox), "at" (ms)}`.
    usage_dead: str
    # String: how many events went to `usage_dead`, in all.
    usage_dead_count: str
    # Sorted set: cut streams' estimated spend (app.store.estimates.Estimate as JSON) -> ms
    # when the worker next asks OpenRouter for its generation record (server-key mode).
    usage_estimated: str
    # Sorted set (cluster only): turn ids recorded in the last SETTLED_MS -> ms, so a replayed
    # record of a turn (lua/record_turn.lua) adds nothing.
    recorded: str
    # List (cluster only): drained usage events of sessions, `<seq> <event>`, waiting to be
    # applied in their sessions' slots (lua/drain_usage_shard.lua), oldest first.
    usage_pending: str
    # String (cluster only): the last sequence number given to a pending event.
    usage_pending_seq: str
    suffix: str

    def daily_metrics(self, day: str) -> str:
        """Hash: metrics of one UTC day (`YYYY-MM-DD`), fields `<model>|<counter>`."""
        return f"{PREFIX}:metrics:{day}{self.suffix}"


def _shard(suffix: str) -> Shard:
    return Shard(
        all_sessions=f"{PREFIX}:sessions{suffix}",
        owners=f"{PREFIX}:owners{suffix}",
        usage_inbox=f"{PREFIX}:usage:inbox{suffix}",
        usage_dead=f"{PREFIX}:usage:dead{suffix}",
        usage_dead_count=f"{PREFIX}:usage:dead{suffix}:count",
        usage_estimated=f"{PREFIX}:usage:estimated{suffix}",
        recorded=f"{PREFIX}:usage:recorded{suffix}",
        usage_pending=f"{PREFIX}:usage:pending{suffix}",
        usage_pending_seq=f"{PREFIX}:usage:pending{suffix}:seq",
        suffix=suffix,
    )


class Layout:
    """The keys that differ between a standalone Redis and a Redis Cluster: the shards of the
    global structures, and the owner's session index (tagged `{<owner>}` on a cluster, in the
    slot of the owner's other keys). Every other key is named alike in both."""

    def __init__(self, *, cluster: bool) -> None:
        self.cluster = cluster
        count = CLUSTER_SHARDS if cluster else 1
        self.shards = tuple(_shard(f":{{{n:02d}}}" if cluster else "") for n in range(count))

    def shard(self, owner: str) -> Shard:
        """The shard of an owner's sessions and usage: by its id, 32 hex digits."""
        if len(self.shards) == 1:
            return self.shards[0]
        return self.shards[int(owner[:8], 16) % len(self.shards)]

    def owner_sessions(self, owner: str) -> str:
        """Sorted set: the owner's session ids -> last activity (ms)."""
        if self.cluster:
            return f"{PREFIX}:owner:{{{owner}}}:sessions"
        return f"{PREFIX}:owner:{owner}:sessions"


STANDALONE = Layout(cluster=False)
CLUSTER = Layout(cluster=True)
