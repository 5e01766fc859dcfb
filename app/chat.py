"""The turn: load history -> call upstream -> commit the turn -> report usage."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from app import telemetry
from app.errors import InvalidRequest, UpstreamError
from app.schemas import ChatRequest, ChatResponse, StoredMessage
from app.sessions import History, HistoryMessage, Turn
from app.usage import UsageEvent, UsageInbox, usage_event_encoder

if TYPE_CHECKING:
    from app.auth import Caller
    from app.openrouter import Completion, OpenRouterClient, UpstreamStream
    from app.sessions import SessionStore
    from app.settings import Settings

# Request fields that are ours, or that we set ourselves; every other field goes upstream as is.
OWN_FIELDS = frozenset(ChatRequest.__struct_fields__) | {"messages", "prompt", "stream_options"}
TITLE_CHARS = 80

_payload_encoder = msgspec.json.Encoder()
EMPTY_HISTORY = History(system_prompt=None, messages=[])


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable, and within the session id pattern."""
    return secrets.token_urlsafe(16)


def title_of(message: str) -> str:
    words = " ".join(message.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


class PreparedTurn(msgspec.Struct, kw_only=True, frozen=True):
    """A validated turn, ready to be sent: everything but the answer."""

    session_id: str
    turn_id: str  # one per turn: a commit retried or repeated for it applies once
    model: str
    system_prompt: str | None
    user: StoredMessage
    payload: bytes


class ChatService:
    """Runs turns; knows nothing of HTTP."""

    def __init__(
        self,
        store: SessionStore,
        upstream: OpenRouterClient,
        usage: UsageInbox,
        settings: Settings,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._usage = usage
        self._settings = settings

    def _check_limits(self, request: ChatRequest) -> None:
        limit = self._settings.max_message_chars
        if len(request.message) > limit:
            raise InvalidRequest(
                f"message: {len(request.message)} characters; at most {limit} are allowed",
                field="message",
            )
        if request.max_tokens is not None and request.max_tokens > self._settings.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens: at most {self._settings.max_tokens_limit} is allowed",
                field="max_tokens",
            )

    async def prepare(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any], *, stream: bool
    ) -> PreparedTurn:
        """Validate, read the history (one round trip) and build the upstream request."""
        self._check_limits(request)
        if request.session_id is None:
            # A fresh random id has no history: no need to ask Redis.
            session_id, history = new_session_id(), EMPTY_HISTORY
        else:
            session_id = request.session_id
            history = await self._store.load_history(session_id, caller.owner)
        model = request.model or self._settings.openrouter_default_model
        system_prompt = request.system_prompt or history.system_prompt
        user = StoredMessage(role="user", content=request.message, timestamp=datetime.now(UTC))
        payload = self._payload(request, extras, history, system_prompt, model, session_id, stream)
        return PreparedTurn(
            session_id=session_id,
            turn_id=uuid.uuid4().hex,
            model=model,
            system_prompt=request.system_prompt,
            user=user,
            payload=payload,
        )

    def _payload(
        self,
        request: ChatRequest,
        extras: dict[str, Any],
        history: History,
        system_prompt: str | None,
        model: str,
        session_id: str,
        stream: bool,
    ) -> bytes:
        messages: list[HistoryMessage] = []
        if system_prompt:
            messages.append(HistoryMessage("system", system_prompt))
        messages.extend(history.messages)
        messages.append(HistoryMessage("user", request.message))
        body: dict[str, Any] = {
            key: value for key, value in extras.items() if key not in OWN_FIELDS
        }
        body.update(
            model=model,
            messages=messages,
            max_tokens=request.max_tokens or self._settings.max_tokens_default,
            # OpenRouter groups the session's calls and keeps them on one provider (caching).
            session_id=session_id,
            # Asks for `usage.cost` from deployments that still need the opt-in.
            usage={"include": True},
        )
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if stream:
            body["stream"] = True
        return _payload_encoder.encode(body)

    async def complete(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any]
    ) -> ChatResponse:
        """One non-streaming turn: at most two Redis round trips on the way."""
        turn = await self.prepare(caller, request, extras, stream=False)
        try:
            completion = await self._upstream.complete(
                caller.key.value, turn.payload, requested_model=turn.model
            )
        except UpstreamError as exc:
            await self.record_failure(turn.model, exc.upstream_status or exc.status)
            raise
        telemetry.UPSTREAM_COMPLETE.observe(completion.latency_ms / 1000)
        return await self.commit(caller, turn, completion)

    async def open_stream(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any]
    ) -> tuple[PreparedTurn, UpstreamStream]:
        """A streaming turn up to upstream's first byte; errors until then are plain errors."""
        turn = await self.prepare(caller, request, extras, stream=True)
        try:
            upstream = await self._upstream.open_stream(caller.key.value, turn.payload)
        except UpstreamError as exc:
            await self.record_failure(turn.model, exc.upstream_status or exc.status)
            raise
        telemetry.UPSTREAM_STREAM_OPEN.observe(time.perf_counter() - upstream.started)
        return turn, upstream

    async def record_failure(self, model: str, status: int) -> None:
        telemetry.upstream_failed(status)
        await self._usage.failed(model, status)

    async def commit(
        self,
        caller: Caller,
        turn: PreparedTurn,
        completion: Completion,
        *,
        interrupted: bool = False,
        error: str | None = None,
        status: int = 200,
    ) -> ChatResponse:
        """Save both messages and hand the usage to the worker, in one atomic write.

        `interrupted` and `error` mark a partial answer of a stream; `status` is the failure
        the worker's metrics count it as.
        """
        assistant = StoredMessage(
            role="assistant",
            content=completion.content,
            timestamp=datetime.now(UTC),
            model=completion.model,
            tokens=completion.usage.total_tokens,
            finish_reason=completion.finish_reason,
            generation_id=completion.generation_id,
            interrupted=interrupted,
            error=error,
        )
        event = UsageEvent.at_time(
            assistant.timestamp,
            status=status,
            model=completion.model,
            session_id=turn.session_id,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            total_tokens=completion.usage.total_tokens,
            cost=completion.usage.cost or 0.0,
            latency_ms=completion.latency_ms,
        )
        await self._store.commit_turn(
            Turn(
                session_id=turn.session_id,
                owner=caller.owner,
                turn_id=turn.turn_id,
                user=turn.user,
                assistant=assistant,
                title=title_of(turn.user.content),
                system_prompt=turn.system_prompt,
                usage_record=usage_event_encoder.encode(event),
            )
        )
        if status != 200:
            telemetry.upstream_failed(status)
        usage = completion.usage
        telemetry.turn_saved(
            completion.model, usage.prompt_tokens, usage.completion_tokens, usage.cost or 0.0
        )
        return ChatResponse(
            response=completion.content,
            model_used=completion.model,
            session_id=turn.session_id,
            tokens_used=completion.usage.total_tokens,
            timestamp=assistant.timestamp,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            generation_id=completion.generation_id,
        )
