"""SessionStore: every Redis command on sessions, and nothing about HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from app.clock import now_ms
from app.errors import SessionNotFound
from app.ids import random_id
from app.schemas import (
    AdminSessionDetail,
    AdminSessionPage,
    AdminSessionSummary,
    MessageContent,
    SessionDetail,
    SessionPage,
    SessionSummary,
    SessionUsage,
    StoredMessage,
    ToolCall,
)
from app.store import keys
from app.store.client import LuaScript, StoreRedis, layout_of, lua_script
from app.store.limits import ADMISSION_LUA, unchecked
from app.store.spend_steps import COMMIT_LUA, record_spend

if TYPE_CHECKING:
    from app.store.limits import Admission


class HistoryMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """The part of a stored message that is sent upstream."""

    role: str
    content: MessageContent
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None


class History(msgspec.Struct, frozen=True):
    """What a turn needs from Redis before it calls upstream."""

    system_prompt: str | None
    messages: list[HistoryMessage]


class TurnCommit(msgspec.Struct, kw_only=True, frozen=True):
    """One committed exchange: the new messages of the request (a user message, tool results,
    ...) and the answer."""

    session_id: str
    owner: str
    turn_id: str
    messages: list[StoredMessage]
    assistant: StoredMessage
    title: str
    system_prompt: str | None
    usage_record: bytes | None = None
    # What the turn spent (tokens, micro-USD), settled against the owner's limits; None for
    # an owner without limits.
    spent: tuple[int, int] | None = None


class Committed(NamedTuple):
    message_count: int
    # The owner's tokens and micro-USD of the UTC day (held by turns in flight included),
    # when it has limits.
    day: tuple[int, int] | None


_message_encoder = msgspec.json.Encoder()
_history_decoder = msgspec.json.Decoder(HistoryMessage)
_message_decoder = msgspec.json.Decoder(StoredMessage)

_SUMMARY_FIELDS = ("owner", "title", "model", "message_count", "created", "updated")
_USAGE_INT_FIELDS = ("turns", "prompt_tokens", "completion_tokens", "total_tokens")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _ms_to_datetime(value: bytes | str | int | None) -> datetime:
    return datetime.fromtimestamp(int(value or 0) / 1000, tz=UTC)


def parse_usage(raw: dict[bytes, bytes]) -> SessionUsage:
    """Read the worker's usage hash (`chat:{id}:usage`)."""
    if not raw:
        return SessionUsage()
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    turns = int(fields.get("turns", 0))
    latency_total = float(fields.get("latency_ms_total", 0))
    models = {
        name.removeprefix("model:"): int(count)
        for name, count in fields.items()
        if name.startswith("model:")
    }
    first, last = fields.get("first_activity"), fields.get("last_activity")
    return SessionUsage(
        **{name: int(fields.get(name, 0)) for name in _USAGE_INT_FIELDS},
        cost=float(fields.get("cost", 0)),
        models=models,
        avg_latency_ms=round(latency_total / turns, 1) if turns else None,
        last_latency_ms=float(fields["last_latency_ms"]) if "last_latency_ms" in fields else None,
        first_activity=_ms_to_datetime(first) if first else None,
        last_activity=_ms_to_datetime(last) if last else None,
    )


def commit_turn_script() -> str:
    return lua_script("commit_turn.lua", after=COMMIT_LUA)


class SessionStore:
    """Sessions in Redis, in the layout documented in `app.store.keys`.

    On a standalone Redis a turn is two scripts: `open_turn.lua` (admission and history) and
    `commit_turn.lua`. On a Redis Cluster each step runs in one slot: the history is read in
    the session's, then the admission runs in the owner's (`Admission.run_owner_part`); the
    commit records the spend first, in the owner's slot (`commit_owner.lua`) and the shard's
    (`record_turn.lua`) at once, then the conversation, in the session's
    (`commit_session.lua`). Each is a no-op when replayed.
    """

    def __init__(
        self, redis: StoreRedis, *, ttl_ms: int, history_cap: int, wait_replicas: int = 0
    ) -> None:
        self._redis = redis
        self._wait_replicas = wait_replicas
        self._layout = layout_of(redis)
        self._ttl_ms = ttl_ms
        self._history_cap = history_cap
        self._open = LuaScript(redis, lua_script("open_turn.lua", after=ADMISSION_LUA))
        self._commit = LuaScript(redis, commit_turn_script())
        self._commit_session = LuaScript(redis, lua_script("commit_session.lua", after=COMMIT_LUA))
        self._commit_owner = LuaScript(redis, lua_script("commit_owner.lua", after=COMMIT_LUA))
        self._record = LuaScript(redis, lua_script("record_turn.lua", after=COMMIT_LUA))
        self._delete = LuaScript(redis, lua_script("delete_session.lua"))

    @property
    def layout(self) -> keys.Layout:
        return self._layout

    async def load_history(
        self, session_id: str, owner: str, admission: Admission | None = None
    ) -> History:
        """The stored system prompt and messages, in one round trip (`lua/open_turn.lua`).

        With an `admission`, the turn's checks (limits, who calls) run first in the same
        script, and a refused turn raises before anything else. An unknown session is empty
        history (the turn will create it).
        """
        k = keys.session_keys(keys.session_ref(owner, session_id))
        if self._layout.cluster:
            return await self._load_history_in_steps(k, admission)
        limit, args = (
            (admission.keys, admission.args) if admission is not None else unchecked(owner)
        )
        reply: list[Any] = await self._open(keys=[*limit, k.meta, k.messages], args=args)
        if admission is not None:
            await admission.settle(reply[0])
        _, system_prompt, raw_messages = reply
        return _history(system_prompt, raw_messages)

    async def _load_history_in_steps(
        self, k: keys.SessionKeys, admission: Admission | None
    ) -> History:
        """On a cluster: the history (and the address's failures, in their own slot) in one
        round trip, then the admission in the owner's slot, its hold counting the history."""
        address = admission.address_key if admission is not None else None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.meta, "system_prompt")
            pipe.lrange(k.messages, 0, -1)
            if address is not None:
                pipe.get(address)
                pipe.pttl(address)
            system_prompt, raw_messages, *failures = await pipe.execute()
        if admission is not None:
            stored = len(system_prompt or b"") + sum(map(len, raw_messages))
            await admission.run_owner_part(stored, failures or None)
        return _history(system_prompt, raw_messages)

    async def commit_turn(self, turn: TurnCommit) -> Committed:
        """Write the turn in one atomic script; it settles the turn against the owner's limits.
        On a cluster, in three single-slot steps (the class says how)."""
        ref = keys.session_ref(turn.owner, turn.session_id)
        k = keys.session_keys(ref)
        spent = ("", "") if turn.spent is None else turn.spent
        now = int(turn.assistant.timestamp.timestamp() * 1000)
        args = [
            turn.session_id,
            turn.owner,
            turn.turn_id,
            now,
            self._ttl_ms,
            self._history_cap,
            turn.assistant.model or "",
            turn.title,
            turn.system_prompt or "",
            turn.usage_record or b"",
            *spent,
            *map(_message_encoder.encode, turn.messages),
            _message_encoder.encode(turn.assistant),
        ]
        shard = self._layout.shard(turn.owner)
        owner_index = self._layout.owner_sessions(turn.owner)
        if self._layout.cluster:
            tokens_today, spent_today = await self._record_spend(
                turn.owner,
                turn.session_id,
                turn.turn_id,
                now,
                turn.usage_record or b"",
                spent,
            )
            _, count = await self._commit_session(
                keys=list(k), args=args, replicas=self._wait_replicas
            )
        else:
            _, count, tokens_today, spent_today = await self._commit(
                keys=[
                    *k,
                    shard.all_sessions,
                    owner_index,
                    shard.usage_inbox,
                    shard.owners,
                    keys.owner_limit(turn.owner),
                    keys.owner_holds(turn.owner),
                ],
                args=args,
                replicas=self._wait_replicas,
            )
        day = (int(tokens_today), int(spent_today)) if tokens_today >= 0 else None
        return Committed(int(count), day)

    async def _record_spend(
        self,
        owner: str,
        session_id: str,
        turn_id: str,
        now: int,
        record: bytes,
        spent: tuple[int, int] | tuple[str, str],
    ) -> tuple[int, int]:
        """The owner's and the shard's parts of a commit on a cluster, both at once."""
        return await record_spend(
            self._redis,
            self._commit_owner,
            self._record,
            owner=owner,
            session_id=session_id,
            turn_id=turn_id,
            now=now,
            ttl_ms=self._ttl_ms,
            record=record,
            spent=spent,
        )

    async def _read(self, owner: str, session_id: str) -> dict[str, Any]:
        """The fields of a session's detail view, in one round trip."""
        k = keys.session_keys(keys.session_ref(owner, session_id))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.meta)
            pipe.lrange(k.messages, 0, -1)
            pipe.pttl(k.meta)
            pipe.hgetall(k.usage)
            meta, raw_messages, ttl_ms, usage = await pipe.execute()
        fields = {key.decode(): value.decode() for key, value in meta.items()}
        if "owner" not in fields:
            raise SessionNotFound(session_id)
        return {
            **_summary_fields(session_id, fields, usage),
            "expires_at": _ms_to_datetime(now_ms() + max(int(ttl_ms), 0)),
            "system_prompt": fields.get("system_prompt"),
            "messages": [_message_decoder.decode(raw) for raw in raw_messages],
        }

    async def get(self, session_id: str, owner: str) -> SessionDetail:
        """The owner's session of that id."""
        return SessionDetail(**await self._read(owner, session_id))

    async def get_any(self, owner: str, session_id: str) -> AdminSessionDetail:
        """Any owner's session (the operators' view)."""
        return AdminSessionDetail(**await self._read(owner, session_id), owner=owner)

    async def delete(self, session_id: str, owner: str) -> None:
        """Remove the owner's session of that id, every key it has and its index entries."""
        ref = keys.session_ref(owner, session_id)
        k = keys.session_keys(ref)
        all_sessions = self._layout.shard(owner).all_sessions
        owner_index = self._layout.owner_sessions(owner)
        indexes = [] if self._layout.cluster else [all_sessions, owner_index]
        deleted = await self._delete(
            keys=[*k, k.deleted, *indexes],
            # One id per call: the client's retry of it is known for a replay.
            args=[session_id, owner, random_id()],
        )
        if self._layout.cluster:
            # Expired sessions leave index entries behind: dropped either way.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(all_sessions, ref)
                pipe.zrem(owner_index, session_id)
                await pipe.execute()
        if not deleted:
            raise SessionNotFound(session_id)

    async def _page(
        self, indexes: list[str], limit: int, offset: int, owner: str | None = None
    ) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """Owners and summary fields of a page of `indexes`, most recent first: two round
        trips. `indexes` hold session refs (the shards of the all-sessions index), or the
        session ids of `owner` (its index).

        Index entries of sessions that Redis already expired are skipped here and removed by
        the worker's pruner.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zcard(index)
                if len(indexes) == 1:
                    pipe.zrevrange(index, offset, offset + limit - 1)
                else:  # the page is among the first offset + limit of each shard
                    pipe.zrevrange(index, 0, offset + limit - 1, withscores=True)
            replies: list[Any] = await pipe.execute()
        total = sum(replies[::2])
        if len(indexes) == 1:
            members = replies[1]
        else:
            entries = [entry for shard in replies[1::2] for entry in shard]
            entries.sort(key=lambda entry: (entry[1], entry[0]), reverse=True)
            members = [member for member, _ in entries[offset : offset + limit]]
        if not members:
            return total, []
        refs = [
            member.decode() if owner is None else keys.session_ref(owner, member.decode())
            for member in members
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                k = keys.session_keys(ref)
                # Only what a listing shows: not the system prompt, which may be long.
                pipe.hmget(k.meta, list(_SUMMARY_FIELDS))
                pipe.hgetall(k.usage)
            results: list[Any] = await pipe.execute()
        rows = []
        for ref, meta, usage in zip(refs, results[::2], results[1::2], strict=True):
            fields = {
                name: value.decode()
                for name, value in zip(_SUMMARY_FIELDS, meta, strict=True)
                if value is not None
            }
            if "owner" in fields:
                rows.append(
                    (fields["owner"], _summary_fields(keys.split_ref(ref)[1], fields, usage))
                )
        return total, rows

    async def page(self, owner: str, *, limit: int, offset: int) -> SessionPage:
        """The owner's sessions, most recent activity first."""
        index = self._layout.owner_sessions(owner)
        total, rows = await self._page([index], limit, offset, owner)
        return SessionPage(
            sessions=[SessionSummary(**summary) for _, summary in rows],
            total=total,
            limit=limit,
            offset=offset,
            next_offset=_next_offset(total, limit, offset),
        )

    async def page_all(self, *, limit: int, offset: int) -> AdminSessionPage:
        """Every session, most recent activity first, with owners."""
        indexes = [shard.all_sessions for shard in self._layout.shards]
        total, rows = await self._page(indexes, limit, offset)
        return AdminSessionPage(
            sessions=[AdminSessionSummary(**summary, owner=owner) for owner, summary in rows],
            total=total,
            limit=limit,
            offset=offset,
            next_offset=_next_offset(total, limit, offset),
        )


def _history(system_prompt: bytes | None, raw_messages: list[bytes]) -> History:
    return History(
        system_prompt=_text(system_prompt),
        messages=[_history_decoder.decode(raw) for raw in raw_messages],
    )


def _next_offset(total: int, limit: int, offset: int) -> int | None:
    return offset + limit if offset + limit < total else None


def _summary_fields(
    session_id: str, fields: dict[str, str], usage: dict[bytes, bytes]
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "title": fields.get("title", ""),
        "model": fields.get("model"),
        "message_count": int(fields.get("message_count", 0)),
        "created_at": _ms_to_datetime(fields.get("created")),
        "updated_at": _ms_to_datetime(fields.get("updated")),
        "usage": parse_usage(usage),
    }
