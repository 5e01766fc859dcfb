"""Streaming turns: OpenRouter's SSE relayed as our events, and the turn committed at the end.

What is saved:
- a completed stream: the turn, exactly as a non-streaming call saves it;
- the client hangs up: the upstream connection is closed at once, and the text received so
  far is saved with its turn, marked `interrupted`;
- the upstream fails mid-stream (an error event, a cut connection, a stream without its finish
  reason or `[DONE]`): the client gets an error event, and the text received so far is saved
  with its turn, marked with the `error`.
In the last two cases, a stream that produced no text saves nothing: a question without an
answer would only confuse the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from redis.exceptions import RedisError

from app.errors import AppError, UpstreamError, openai_detail
from app.ops import prometheus
from app.schemas import (
    ChatResponse,
    ErrorDetail,
    OpenAIErrorBody,
    ToolCall,
    ToolCallFunction,
    Usage,
)
from app.store.failures import storage_error
from app.turns.service import CLIENT_CLOSED, chat_answer
from app.upstream.client import Completion, ErrorObject

if TYPE_CHECKING:
    from app.schemas import StoredMessage
    from app.turns.callers import Caller
    from app.turns.request_log import RequestLog
    from app.turns.service import ChatService, PreparedTurn
    from app.upstream.client import StreamChunk, ToolCallDelta, UpstreamStream

logger = logging.getLogger("app.streaming")

# The ASGI channel of the response the relay writes, typed loosely: the relay speaks ASGI,
# whichever edge started the response (`app.http.turn_route`).
Send = Callable[[Any], Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]


class DoneEvent(ChatResponse, kw_only=True, frozen=True, tag="done", tag_field="type"):
    """The last event: every field of the non-streaming response."""


class ErrorEvent(msgspec.Struct, kw_only=True, frozen=True, tag="error", tag_field="type"):
    """The stream broke after it began; `error` has the shape of every error body."""

    error: ErrorDetail


PROVIDER_FAILED = ErrorObject(message="the provider failed while generating")

_encoder = msgspec.json.Encoder()

KEEPALIVE = b": keep-alive\n\n"


def frame(payload: bytes) -> bytes:
    """One SSE event: a `data:` line and a blank line (the JSON payload holds no newline)."""
    return b"data: " + payload + b"\n\n"


_DELTA_HEAD = b'data: {"type":"delta","content":'


def delta_event(text: str) -> bytes:
    return _DELTA_HEAD + _encoder.encode(text) + b"}\n\n"


class EventFormat(Protocol):
    """What a relay says to its client: `/chat`'s events, or OpenAI's chunks."""

    def chunk(self, raw: bytes, chunk: StreamChunk, text: str) -> bytes | None:
        """The bytes to send for one upstream event (`raw` as sent), if any."""

    def done(self, turn: PreparedTurn, completion: Completion, saved: StoredMessage) -> bytes:
        """The last event of a stream whose turn is committed."""

    def error(self, error: AppError, request_id: str) -> bytes:
        """The last event of a stream that broke after it began."""


class ChatEvents:
    """`/chat`'s stream: `delta` events with the text, then `done` or `error`."""

    def chunk(self, raw: bytes, chunk: StreamChunk, text: str) -> bytes | None:
        return delta_event(text) if text else None

    def done(self, turn: PreparedTurn, completion: Completion, saved: StoredMessage) -> bytes:
        answer = chat_answer(turn, completion, saved)
        return frame(_encoder.encode(DoneEvent(**msgspec.structs.asdict(answer))))

    def error(self, error: AppError, request_id: str) -> bytes:
        return frame(_encoder.encode(ErrorEvent(error=error.detail(request_id))))


CHAT_EVENTS = ChatEvents()
OPENAI_DONE = b"data: [DONE]\n\n"


class OpenAIEvents:
    """OpenAI's stream: upstream's chunks as OpenRouter sent them (it speaks OpenAI's format),
    `[DONE]` once the turn is committed, and errors in OpenAI's shape."""

    def chunk(self, raw: bytes, chunk: StreamChunk, text: str) -> bytes | None:
        if (
            chunk.error is not None
            or chunk.choice_error is not None
            or chunk.finish_reason == "error"
        ):
            # Answered by an error event of ours: upstream's message is scrubbed of the key.
            return None
        # One event, even if its JSON came on several `data:` lines.
        return b"".join((b"data: ", raw.replace(b"\n", b"\ndata: "), b"\n\n"))

    def done(self, turn: PreparedTurn, completion: Completion, saved: StoredMessage) -> bytes:
        return OPENAI_DONE

    def error(self, error: AppError, request_id: str) -> bytes:
        return frame(_encoder.encode(OpenAIErrorBody(error=openai_detail(error))))


OPENAI_EVENTS = OpenAIEvents()


class _ToolCallParts:
    """One tool call, from its streamed fragments."""

    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = "function"
        self.name = ""
        self.arguments: list[str] = []

    def add(self, delta: ToolCallDelta) -> None:
        self.id = delta.id or self.id
        self.type = delta.type or self.type
        if delta.function is not None:
            self.name = delta.function.name or self.name
            if delta.function.arguments:
                self.arguments.append(delta.function.arguments)

    def call(self) -> ToolCall:
        function = ToolCallFunction(name=self.name, arguments="".join(self.arguments))
        return ToolCall(id=self.id, type=self.type, function=function)


class _Received:
    """What the upstream stream has said so far."""

    __slots__ = (
        "finish_reason",
        "generation_id",
        "model",
        "parts",
        "reasoning",
        "tool_calls",
        "usage",
    )

    def __init__(self, model: str, generation_id: str | None) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, _ToolCallParts] = {}
        self.model = model
        self.generation_id = generation_id
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.reasoning: list[dict[str, Any]] = []

    def add(self, chunk: StreamChunk) -> str:
        text = chunk.text
        if text:
            self.parts.append(text)
        tool_calls = chunk.tool_calls
        if tool_calls:
            for delta in tool_calls:
                self.tool_calls.setdefault(delta.index, _ToolCallParts()).add(delta)
        reasoning = chunk.reasoning_details
        if reasoning:
            for detail in reasoning:
                _add_reasoning(self.reasoning, detail)
        self.model = chunk.model or self.model
        self.generation_id = self.generation_id or chunk.id
        self.finish_reason = chunk.finish_reason or self.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage.public()
        return text

    def completion(self, started: float, *, calls: bool = True) -> Completion:
        """The answer so far; with `calls=False`, without its tool calls."""
        tool_calls = [self.tool_calls[i].call() for i in sorted(self.tool_calls)] if calls else []
        return Completion(
            content="".join(self.parts),
            model=self.model,
            finish_reason=self.finish_reason,
            generation_id=self.generation_id,
            usage=self.usage,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            tool_calls=tool_calls or None,
            reasoning_details=self.reasoning or None,
        )


# The pieces of a reasoning detail that a stream spreads over its chunks.
_REASONING_TEXT = ("text", "summary", "data", "signature")


def _add_reasoning(details: list[dict[str, Any]], piece: dict[str, Any]) -> None:
    """Add a streamed piece of reasoning: the detail it continues (same type and index)
    gets its text, anything else is a detail of its own."""
    last = details[-1] if details else None
    if (
        last is None
        or last.get("type") != piece.get("type")
        or last.get("index") != piece.get("index")
    ):
        details.append(dict(piece))
        return
    for name, value in piece.items():
        if name in _REASONING_TEXT and isinstance(value, str) and isinstance(last.get(name), str):
            last[name] += value
        elif value is not None:
            last[name] = value


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class StreamRelay:
    """Relays one upstream stream to one client, then commits the turn.

    Three tasks per stream, none per chunk: the relay itself, a watcher for the client hanging
    up, and a keep-alive timer. A keep-alive counts from our last byte, not upstream's: a model
    that streams only reasoning sends events but gives the client nothing.
    """

    def __init__(
        self,
        *,
        chat: ChatService,
        caller: Caller,
        turn: PreparedTurn,
        upstream: UpstreamStream,
        events: EventFormat,
        keepalive_seconds: float,
        log: RequestLog,
    ) -> None:
        self._chat = chat
        self._events = events
        self._caller = caller
        self._turn = turn
        self._upstream = upstream
        self._keepalive = keepalive_seconds
        self._log = log
        self._received = _Received(turn.model, upstream.generation_id)
        self._last_sent = 0.0
        # Set while the turn is being written: a hang-up then must not cut the write short.
        self._committing = False
        self._ended = False
        self._awaiting_first_token = True

    async def abandon(self) -> None:
        """Close the upstream stream of a relay that will never run."""
        await self._upstream.aclose()

    async def run(self, send: Send, receive: Receive) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        relay = asyncio.ensure_future(self._relay(send))
        disconnect = asyncio.ensure_future(_disconnected(receive))
        keepalive = asyncio.ensure_future(self._keepalives(send))
        prometheus.STREAMS.inc()
        try:
            done, _ = await asyncio.wait((relay, disconnect), return_when=asyncio.FIRST_COMPLETED)
            if relay in done or self._committing:
                await relay
            else:
                await self._interrupted(relay)
        except asyncio.CancelledError:
            # The server is stopping and its grace is over: keep what was said, as when the
            # client hangs up, in a write that the shutdown waits for.
            if not self._committing:
                self._chat.write_later(self._interrupted(relay))
            raise
        finally:
            prometheus.STREAMS.dec()
            keepalive.cancel()
            disconnect.cancel()
            relay.cancel()
            await self._upstream.aclose()
            self._log.session_id = self._turn.session_id
            self._log.model = self._received.model
            self._log.tokens = self._received.usage.total_tokens

    async def _end(self, send: Send, data: bytes) -> None:
        """Send the stream's last event, `done` or `error`: once."""
        self._ended = True
        await self._send(send, data)

    async def _send(self, send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})
        self._last_sent = asyncio.get_running_loop().time()

    async def _keepalives(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._last_sent + self._keepalive - loop.time(), 0.0))
            if loop.time() - self._last_sent >= self._keepalive:
                await self._send(send, KEEPALIVE)

    async def _relay(self, send: Send) -> None:
        """Every way a stream ends sends one last event: `done`, or `error`."""
        try:
            await self._relay_events(send)
        except Exception:  # a fault of ours: the client still hears that the stream ended
            logger.exception("a stream failed")
            if self._ended:
                raise
            await self._end(send, self._error_event(AppError("internal error")))

    async def _relay_events(self, send: Send) -> None:
        try:
            async for batch in self._upstream.batches():
                out: list[bytes] = []
                for raw, chunk in batch:
                    # Text first: what is saved of a failed answer is what the client got.
                    event = self._events.chunk(raw, chunk, self._received.add(chunk))
                    if event is not None:
                        out.append(event)
                    error = chunk.error or chunk.choice_error
                    if error is not None or chunk.finish_reason == "error":
                        if out:
                            await self._send(send, b"".join(out))
                        await self._failed(send, self._upstream.error(error or PROVIDER_FAILED))
                        return
                if out:
                    if self._awaiting_first_token:
                        self._awaiting_first_token = False
                        prometheus.FIRST_TOKEN_SECONDS.observe(
                            time.perf_counter() - self._upstream.started
                        )
                    await self._send(send, b"".join(out))
        except UpstreamError as exc:
            await self._failed(send, exc)
            return
        await self._finished(send)

    async def _finished(self, send: Send) -> None:
        if self._received.finish_reason is None or not self._upstream.saw_done:
            missing = "finish reason" if self._received.finish_reason is None else "[DONE]"
            await self._failed(
                send,
                UpstreamError(
                    502,
                    "upstream_incomplete",
                    f"the stream from OpenRouter ended without its {missing}",
                ),
            )
            return
        self._committing = True
        completion = self._received.completion(self._upstream.started)
        try:
            saved = await self._chat.commit(self._caller, self._turn, completion)
        except RedisError as exc:
            logger.warning("could not save a streamed turn")
            await self._end(send, self._error_event(storage_error(exc)))
            return
        await self._end(send, self._events.done(self._turn, completion, saved))

    async def _failed(self, send: Send, error: AppError) -> None:
        """The client gets the error event; text already produced is saved, marked."""
        status = error.upstream_status if isinstance(error, UpstreamError) else None
        self._committing = True
        await self._save_partial(error=error.message, status=status or error.status)
        await self._end(send, self._error_event(error))

    async def _interrupted(self, relay: asyncio.Future[None]) -> None:
        """The client hung up, or the server is stopping: stop the relay and the upstream now,
        keep what was said."""
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await self._upstream.aclose()
        await self._save_partial(interrupted=True)

    async def _save_partial(
        self, *, interrupted: bool = False, error: str | None = None, status: int = 200
    ) -> None:
        if not self._received.parts:
            # Cut before any text: upstream billed the prompt (its usage, if it came).
            usage, estimated_for = self._received.usage, None
            if interrupted and not usage.total_tokens:
                usage = self._chat.estimate(self._turn, "")
                estimated_for = self._received.generation_id
            await self._chat.record_failure(
                self._caller,
                self._turn,
                CLIENT_CLOSED if status == 200 else status,
                usage,
                estimated_for=estimated_for,
            )
            return
        # A tool call cut short cannot be answered: of a partial answer, only the text is kept.
        completion = self._received.completion(self._upstream.started, calls=False)
        try:
            await self._chat.commit(
                self._caller,
                self._turn,
                completion,
                interrupted=interrupted,
                error=error,
                status=status,
            )
        except (RedisError, AppError) as exc:
            logger.warning(
                "could not save a partial answer", extra={"fields": {"error": type(exc).__name__}}
            )

    def _error_event(self, error: AppError) -> bytes:
        return self._events.error(error, self._log.request_id)
