"""What Redis holds of sessions, and whether every session in it is made of whole turns."""

from __future__ import annotations

import json
import re
from typing import Any

import redis

from app.store import keys

_SESSION_KEY = re.compile(rb"^chat:\{([^}]*)\}:(meta|messages|turns|usage)$")
ALL_SESSIONS = b"chat:sessions"
META_FIELDS = (b"owner", b"created", b"updated", b"turns", b"message_count")


def session_refs(r: redis.Redis) -> set[bytes]:
    """Every session (`<owner>:<session id>`) a key or the index names."""
    client: Any = r  # redis-py's sync stubs type every reply as maybe-awaitable
    refs = {match.group(1) for key in client.scan_iter(match="chat:{*}:*", count=1000)
            if (match := _SESSION_KEY.match(key))}  # fmt: skip
    refs.update(client.zrange(ALL_SESSIONS, 0, -1))
    return refs


def session_ids(r: redis.Redis) -> set[bytes]:
    """Every session id (as clients know them) a key or the index names."""
    return {ref.rpartition(b":")[2] for ref in session_refs(r)}


def session_tag(r: redis.Redis, session_id: str) -> str:
    """`chat:{<owner>:<session id>}` of the one session with that id (ids are unique in a
    test); `chat:{<owner>:<session id>}` of no owner when none has it."""
    client: Any = r
    for key in client.scan_iter(match=f"chat:{{*:{session_id}}}:*", count=1000):
        return str(key.decode().rpartition(":")[0])
    return f"chat:{{nobody:{session_id}}}"


def stored_messages(r: redis.Redis, session: bytes | str) -> list[dict[str, Any]]:
    """The messages of a session, by its ref or its id."""
    name = session.decode() if isinstance(session, bytes) else session
    tag = f"chat:{{{name}}}" if ":" in name else session_tag(r, name)
    client: Any = r
    return [json.loads(raw) for raw in client.lrange(f"{tag}:messages", 0, -1)]


def broken_turns(r: redis.Redis) -> list[str]:
    """What is wrong with the sessions in Redis; empty when each holds whole turns only.

    A whole turn is a user message followed by its answer, counted in the metadata, with the
    session in both indexes. Anything else is a write that was left half-applied.
    """
    client: Any = r
    problems: list[str] = []
    for ref in sorted(session_refs(r)):
        name = ref.decode(errors="replace")
        sid = ref.rpartition(b":")[2]
        meta: dict[bytes, bytes] = client.hgetall(b"chat:{%s}:meta" % ref)
        messages = stored_messages(r, ref)
        if not meta:
            problems.append(f"{name}: keys or an index entry without metadata")
            continue
        missing = [field.decode() for field in META_FIELDS if field not in meta]
        if missing:
            problems.append(f"{name}: metadata lacks {missing}")
            continue
        if int(meta[b"message_count"]) != len(messages):
            problems.append(
                f"{name}: {len(messages)} messages, metadata says {meta[b'message_count']!r}"
            )
        roles = [message.get("role") for message in messages]
        if roles != ["user", "assistant"] * (len(messages) // 2) or len(messages) % 2:
            problems.append(f"{name}: messages are not whole turns: {roles}")
        if client.zscore(ALL_SESSIONS, ref) is None:
            problems.append(f"{name}: missing from {ALL_SESSIONS.decode()}")
        owner_index = b"chat:owner:%s:sessions" % meta[b"owner"]
        if client.zscore(owner_index, sid) is None:
            problems.append(f"{name}: missing from its owner's index")
    return problems


def layout_for(r: Any) -> keys.Layout:
    """The key layout the API uses on the store `r` is a client of."""
    return keys.CLUSTER if isinstance(r, redis.RedisCluster) else keys.STANDALONE


def inbox_events(r: Any) -> list[bytes]:
    """The usage events waiting for the worker, in every shard's inbox."""
    return [event for shard in layout_for(r).shards for event in r.lrange(shard.usage_inbox, 0, -1)]


def indexed_sessions(r: Any) -> int:
    """The entries of the all-sessions index, over its shards."""
    return sum(int(r.zcard(shard.all_sessions)) for shard in layout_for(r).shards)


def pending_events(r: Any) -> list[bytes]:
    """The drained usage events waiting for their sessions (a cluster's pending lists)."""
    return [
        entry for shard in layout_for(r).shards for entry in r.lrange(shard.usage_pending, 0, -1)
    ]


def dead_events(r: Any) -> list[bytes]:
    """The entries of every shard's dead-letter list."""
    return [entry for shard in layout_for(r).shards for entry in r.lrange(shard.usage_dead, 0, -1)]


def dead_count(r: Any) -> int:
    """How many events went to the dead-letter lists, over the shards."""
    return sum(int(r.get(shard.usage_dead_count) or 0) for shard in layout_for(r).shards)


def estimates_queued(r: Any) -> int:
    """The cut streams' estimates waiting for a correction, over the shards."""
    return sum(int(r.zcard(shard.usage_estimated)) for shard in layout_for(r).shards)


def owner_index(r: Any, owner: str) -> str:
    """The name of an owner's session index on the store `r` is a client of."""
    return layout_for(r).owner_sessions(owner)
