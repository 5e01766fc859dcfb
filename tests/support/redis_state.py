"""What Redis holds of sessions, and whether every session in it is made of whole turns."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

_SESSION_KEY = re.compile(rb"^chat:\{([^}]*)\}:(meta|messages|turns|usage)$")
ALL_SESSIONS = b"chat:sessions"
META_FIELDS = (b"owner", b"created", b"updated", b"turns", b"message_count")


def session_ids(r: redis.Redis) -> set[bytes]:
    """Every session id a key or the index names."""
    client: Any = r  # redis-py's sync stubs type every reply as maybe-awaitable
    ids = {match.group(1) for key in client.scan_iter(match="chat:{*}:*", count=1000)
           if (match := _SESSION_KEY.match(key))}  # fmt: skip
    ids.update(client.zrange(ALL_SESSIONS, 0, -1))
    return ids


def stored_messages(r: redis.Redis, session_id: bytes | str) -> list[dict[str, Any]]:
    sid = session_id.decode() if isinstance(session_id, bytes) else session_id
    client: Any = r
    return [json.loads(raw) for raw in client.lrange(f"chat:{{{sid}}}:messages", 0, -1)]


def broken_turns(r: redis.Redis) -> list[str]:
    """What is wrong with the sessions in Redis; empty when each holds whole turns only.

    A whole turn is a user message followed by its answer, counted in the metadata, with the
    session in both indexes. Anything else is a write that was left half-applied.
    """
    client: Any = r
    problems: list[str] = []
    for sid in sorted(session_ids(r)):
        name = sid.decode(errors="replace")
        meta: dict[bytes, bytes] = client.hgetall(b"chat:{%s}:meta" % sid)
        messages = stored_messages(r, sid)
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
        if client.zscore(ALL_SESSIONS, sid) is None:
            problems.append(f"{name}: missing from {ALL_SESSIONS.decode()}")
        owner_index = b"chat:owner:%s:sessions" % meta[b"owner"]
        if client.zscore(owner_index, sid) is None:
            problems.append(f"{name}: missing from its owner's index")
    return problems
