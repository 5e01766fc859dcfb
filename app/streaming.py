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
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response
from litestar.response.base import ASGIResponse
from redis.exceptions import RedisError

from app import telemetry
from app.errors import AppError, StorageUnavailable, UpstreamError
from app.openrouter import Completion, ErrorObject, WireUsage
from app.schemas import ChatResponse, ErrorDetail
from app.sse import KEEPALIVE, frame

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.types import Receive, Send

    from app.auth import Caller
    from app.chat import ChatService, PreparedTurn
    from app.context import RequestLog
    from app.openrouter import StreamChunk, UpstreamStream

logger = logging.getLogger("app.streaming")

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and several platforms' proxies buffer responses unless told not to.
    "X-Accel-Buffering": "no",
}


class DoneEvent(ChatResponse, kw_only=True, frozen=True, tag="done", tag_field="type"):
    """The last event: every field of the non-streaming response."""


class ErrorEvent(msgspec.Struct, kw_only=True, frozen=True, tag="error", tag_field="type"):
    """The stream broke after it began; `error` has the shape of every error body."""

    error: ErrorDetail


PROVIDER_FAILED = ErrorObject(message="the provider failed while generating")

_encoder = msgspec.json.Encoder()
_DELTA_HEAD = b'data: {"type":"delta","content":'


def delta_event(text: str) -> bytes:
    return _DELTA_HEAD + _encoder.encode(text) + b"}\n\n"


class _Received:
    """What the upstream stream has said so far."""

    __slots__ = ("finish_reason", "generation_id", "model", "parts", "usage")

    def __init__(self, model: str, generation_id: str | None) -> None:
        self.parts: list[str] = []
        self.model = model
        self.generation_id = generation_id
        self.finish_reason: str | None = None
        self.usage = WireUsage()

    def add(self, chunk: StreamChunk) -> str:
        text = chunk.text
        if text:
            self.parts.append(text)
        self.model = chunk.model or self.model
        self.generation_id = self.generation_id or chunk.id
        self.finish_reason = chunk.finish_reason or self.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        return text

    def completion(self, started: float) -> Completion:
        return Completion(
            content="".join(self.parts),
            model=self.model,
            finish_reason=self.finish_reason,
            generation_id=self.generation_id,
            usage=self.usage.public(),
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )


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
        keepalive_seconds: float,
        log: RequestLog,
    ) -> None:
        self._chat = chat
        self._caller = caller
        self._turn = turn
        self._upstream = upstream
        self._keepalive = keepalive_seconds
        self._log = log
        self._received = _Received(turn.model, upstream.generation_id)
        self._last_sent = 0.0
        # Set while the turn is being written: a hang-up then must not cut the write short.
        self._committing = False
        self._awaiting_first_token = True

    async def run(self, send: Send, receive: Receive) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        relay = asyncio.ensure_future(self._relay(send))
        disconnect = asyncio.ensure_future(_disconnected(receive))
        keepalive = asyncio.ensure_future(self._keepalives(send))
        telemetry.STREAMS.inc()
        try:
            done, _ = await asyncio.wait((relay, disconnect), return_when=asyncio.FIRST_COMPLETED)
            if relay in done or self._committing:
                await relay
            else:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
                await self._interrupted()
        finally:
            telemetry.STREAMS.dec()
            keepalive.cancel()
            disconnect.cancel()
            relay.cancel()
            await self._upstream.aclose()
            self._log.session_id = self._turn.session_id
            self._log.model = self._received.model
            self._log.tokens = self._received.usage.total_tokens

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
        try:
            async for batch in self._upstream.batches():
                out: list[bytes] = []
                for chunk in batch:
                    # Text first: what is saved of a failed answer is what the client got.
                    if text := self._received.add(chunk):
                        out.append(delta_event(text))
                    error = chunk.error or chunk.choice_error
                    if error is not None or chunk.finish_reason == "error":
                        if out:
                            await self._send(send, b"".join(out))
                        await self._failed(send, self._upstream.error(error or PROVIDER_FAILED))
                        return
                if out:
                    if self._awaiting_first_token:
                        self._awaiting_first_token = False
                        telemetry.FIRST_TOKEN_SECONDS.observe(
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
        try:
            answer = await self._chat.commit(
                self._caller, self._turn, self._received.completion(self._upstream.started)
            )
        except RedisError:
            telemetry.redis_failed()
            logger.warning("could not save a streamed turn: redis unavailable")
            await self._send(send, self._error_event(StorageUnavailable()))
            return
        done = DoneEvent(**msgspec.structs.asdict(answer))
        await self._send(send, frame(_encoder.encode(done)))

    async def _failed(self, send: Send, error: AppError) -> None:
        """The client gets the error event; text already produced is saved, marked."""
        status = error.upstream_status if isinstance(error, UpstreamError) else None
        self._committing = True
        await self._save_partial(error=error.message, status=status or error.status)
        await self._send(send, self._error_event(error))

    async def _interrupted(self) -> None:
        """The client hung up: stop the upstream now, keep what was said."""
        await self._upstream.aclose()
        await self._save_partial(interrupted=True)

    async def _save_partial(
        self, *, interrupted: bool = False, error: str | None = None, status: int = 200
    ) -> None:
        if not self._received.parts:
            if status != 200:
                await self._chat.record_failure(self._turn.model, status)
            return
        try:
            await self._chat.commit(
                self._caller,
                self._turn,
                self._received.completion(self._upstream.started),
                interrupted=interrupted,
                error=error,
                status=status,
            )
        except (RedisError, AppError) as exc:
            logger.warning(
                "could not save a partial answer", extra={"fields": {"error": type(exc).__name__}}
            )

    def _error_event(self, error: AppError) -> bytes:
        return frame(_encoder.encode(ErrorEvent(error=error.detail(self._log.request_id))))


class _EventStreamASGI(ASGIResponse):
    """Litestar's ASGI response, with the body sent by the relay."""

    __slots__ = ("relay",)
    _should_set_content_length = False

    def __init__(self, relay: StreamRelay, headers: dict[str, Any]) -> None:
        super().__init__(headers=headers, media_type="text/event-stream")
        self.relay = relay

    async def send_body(self, send: Send, receive: Receive) -> None:
        await self.relay.run(send, receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class EventStream(Response[bytes]):
    """The SSE response of a streaming turn."""

    __slots__ = ("relay",)

    def __init__(self, relay: StreamRelay) -> None:
        super().__init__(b"", media_type="text/event-stream", headers=STREAM_HEADERS)
        self.relay = relay

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> ASGIResponse:
        return _EventStreamASGI(self.relay, {**self.headers, **(headers or {})})
