"""OpenRouter's wire format and the client that speaks it: completions, streams, the model list."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from app.errors import UpstreamError
from app.schemas import MAX_COST_PER_CALL, MAX_TOKENS_PER_CALL, ToolCall, Usage
from app.upstream.sse import sse_batches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

logger = logging.getLogger("app.upstream")

# Statuses worth another attempt: nothing was generated, so nothing is billed twice.
RETRY_STATUSES = frozenset({408, 502, 503})
# A longer Retry-After is the client's to honour: we answer at once and pass it on.
MAX_RETRY_AFTER_SECONDS = 5.0
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 2.0

_PASSED_THROUGH = {400: "upstream_bad_request", 401: "upstream_unauthorized",
                   402: "payment_required", 403: "upstream_forbidden",
                   404: "upstream_not_found", 413: "upstream_payload_too_large",
                   422: "upstream_unprocessable", 429: "rate_limited"}  # fmt: skip


class ErrorObject(msgspec.Struct, frozen=True):
    """OpenRouter's `error` object; `code` may be a number or a string, or be missing where
    the newer `http_status` and `availability` are given."""

    message: str = ""
    code: int | str | None = None
    metadata: dict[str, Any] | None = None
    http_status: int | None = None
    availability: dict[str, Any] | None = None


class _ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorObject | None = None


def _count(value: Any) -> int | None:
    """A token count as reported, or None when it cannot be one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= MAX_TOKENS_PER_CALL else None
    return None


def _cost(value: Any) -> float | None:
    """A cost in USD as reported, or None when it cannot be one (NaN fails both bounds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if 0 <= value <= MAX_COST_PER_CALL else None
    return None


class WireUsage(msgspec.Struct, frozen=True):
    """`usage` as OpenRouter sent it, its figures of any type: read it through `public`.

    Typed strictly, one odd figure (a count past 64 bits, a string, a negative cost) would
    fail the whole answer, or reach a script that writes it.
    """

    prompt_tokens: Any = None
    completion_tokens: Any = None
    total_tokens: Any = None
    cost: Any = None

    def public(self) -> Usage:
        """The figures that can be right; each one that cannot is unknown (0, or no cost),
        and the answer's bad figures are logged once."""
        prompt, completion = _count(self.prompt_tokens), _count(self.completion_tokens)
        total, cost = _count(self.total_tokens), _cost(self.cost)
        figures = (
            ("prompt_tokens", self.prompt_tokens, prompt),
            ("completion_tokens", self.completion_tokens, completion),
            ("total_tokens", self.total_tokens, total),
            ("cost", self.cost, cost),
        )
        bad = [name for name, sent, read in figures if sent is not None and read is None]
        if bad:
            logger.warning(
                "OpenRouter reported usage figures that cannot be right: counted as unknown",
                extra={"fields": {"usage_fields": bad}},
            )
        known = (prompt or 0) + (completion or 0)
        return Usage(
            prompt_tokens=prompt or 0,
            completion_tokens=completion or 0,
            total_tokens=total if total is not None and total >= known else known,
            cost=cost,
        )


class _Message(msgspec.Struct, frozen=True):
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning_details: list[dict[str, Any]] | None = None


class _Choice(msgspec.Struct, frozen=True):
    message: _Message | None = None
    finish_reason: str | None = None
    error: ErrorObject | None = None


class _Completion(msgspec.Struct, frozen=True):
    id: str | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: WireUsage | None = None
    error: ErrorObject | None = None


class _FunctionDelta(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, frozen=True):
    """A fragment of a streamed tool call: the first carries id and name, later ones arguments."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_details: list[dict[str, Any]] | None = None


class _StreamChoice(msgspec.Struct, frozen=True):
    delta: _Delta | None = None
    finish_reason: str | None = None
    error: ErrorObject | None = None


class StreamChunk(msgspec.Struct, frozen=True):
    """One event of OpenRouter's stream: only what we use of it."""

    id: str | None = None
    model: str | None = None
    choices: list[_StreamChoice] | None = None
    usage: WireUsage | None = None
    error: ErrorObject | None = None

    @property
    def text(self) -> str:
        if self.choices and self.choices[0].delta is not None:
            return self.choices[0].delta.content or ""
        return ""

    @property
    def tool_calls(self) -> list[ToolCallDelta] | None:
        if self.choices and self.choices[0].delta is not None:
            return self.choices[0].delta.tool_calls
        return None

    @property
    def reasoning_details(self) -> list[dict[str, Any]] | None:
        if self.choices and self.choices[0].delta is not None:
            return self.choices[0].delta.reasoning_details
        return None

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    @property
    def choice_error(self) -> ErrorObject | None:
        return self.choices[0].error if self.choices else None


class _ModelList(msgspec.Struct, frozen=True):
    data: list[msgspec.Raw]


class _GenerationData(msgspec.Struct, frozen=True):
    # Figures of any type, as in `WireUsage`: read through `_count` and `_cost`.
    tokens_prompt: Any = None
    tokens_completion: Any = None
    total_cost: Any = None


class _Generation(msgspec.Struct, frozen=True):
    data: _GenerationData


class GenerationRecord(msgspec.Struct, frozen=True):
    """What OpenRouter says a generation used and cost (`GET /generation?id=`)."""

    tokens_prompt: int
    tokens_completion: int
    total_cost: float


_completion_decoder = msgspec.json.Decoder(_Completion)
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_models_decoder = msgspec.json.Decoder(_ModelList)
_generation_decoder = msgspec.json.Decoder(_Generation)
_chunk_decoder = msgspec.json.Decoder(StreamChunk)

DONE = b"[DONE]"


class Completion(msgspec.Struct, kw_only=True, frozen=True):
    """One finished answer from upstream."""

    content: str
    model: str
    finish_reason: str | None
    generation_id: str | None
    usage: Usage
    latency_ms: float
    tool_calls: list[ToolCall] | None = None
    # A reasoning model's reasoning, as sent: OpenRouter asks for it back with the message.
    reasoning_details: list[dict[str, Any]] | None = None
    # The upstream's body as it sent it (non-streaming): relayed verbatim by `/v1`.
    body: bytes = b""


def status_for(upstream_status: int) -> tuple[int, str]:
    """The status we answer for an upstream status, and its error type."""
    if upstream_status in _PASSED_THROUGH:
        return upstream_status, _PASSED_THROUGH[upstream_status]
    if upstream_status in (408, 524):
        return 504, "upstream_timeout"
    if upstream_status == 503:
        return 503, "upstream_unavailable"
    return 502, "upstream_error"


def error_from_object(
    error: ErrorObject, *, fallback_status: int, key: str, headers: dict[str, str] | None = None
) -> UpstreamError:
    """An `UpstreamError` from OpenRouter's error object, with the key scrubbed out."""
    code = error.code
    # isdigit() alone admits "²", which int() refuses.
    text = str(code) if isinstance(code, int | str) else ""
    upstream_status = int(text) if text.isascii() and text.isdigit() else None
    upstream_status = upstream_status or error.http_status or fallback_status
    status, error_type = status_for(upstream_status)
    message = error.message or f"OpenRouter answered {upstream_status}"
    raw = (error.metadata or {}).get("raw")
    if isinstance(raw, str) and raw and raw not in message:
        # Scrubbed before it is cut: a cut through the key would leave its start unmatched.
        message = f"{message}: {scrub(raw, key)[:500]}"
    passed_headers = {}
    if status in (429, 503):
        retry_after = retry_after_of(error, headers or {})
        if retry_after is not None:
            passed_headers["Retry-After"] = retry_after
    return UpstreamError(
        status,
        error_type,
        scrub(message, key),
        upstream_status=upstream_status,
        headers=passed_headers,
    )


def _seconds_text(value: Any) -> str | None:
    """Whole seconds, as `Retry-After` states them, from a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return str(max(math.ceil(value), 0))
    if isinstance(value, str):
        return _seconds_text(retry_after_seconds(value))
    return None


def retry_after_of(error: ErrorObject, headers: dict[str, str]) -> str | None:
    """When to retry a 429 or 503, from wherever OpenRouter said it: its `Retry-After` header,
    or in the body the provider's `Retry-After` (`metadata.headers`), `retry_after_seconds`,
    `availability.retry_after`, or the platform limit's `X-RateLimit-Reset` (epoch ms)."""
    if "retry-after" in headers:
        return headers["retry-after"]
    metadata = error.metadata or {}
    mirrored = metadata.get("headers")
    mirrored = (
        {str(k).lower(): v for k, v in mirrored.items()} if isinstance(mirrored, dict) else {}
    )
    availability = error.availability or {}
    for value in (
        mirrored.get("retry-after"),
        metadata.get("retry_after_seconds"),
        availability.get("retry_after"),
    ):
        seconds = _seconds_text(value)
        if seconds is not None:
            return seconds
    reset = mirrored.get("x-ratelimit-reset")
    reset_ms = (
        int(reset) if isinstance(reset, str) and reset.isascii() and reset.isdigit() else None
    )
    if reset_ms is not None:
        return str(max(math.ceil(reset_ms / 1000 - time.time()), 1))
    return None


def error_from_response(
    status: int, body: bytes, headers: httpx.Headers, key: str
) -> UpstreamError:
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        error = None
    if error is None:
        error = ErrorObject(message=f"OpenRouter answered {status} with a body that is not JSON")
    return error_from_object(
        error, fallback_status=status, key=key, headers={k.lower(): v for k, v in headers.items()}
    )


def scrub(text: str, key: str) -> str:
    """Upstream messages are shown to clients and logged: never with the key in them."""
    return text.replace(key, "[redacted]") if key else text


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds, from either of its two forms."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def parse_completion(body: bytes, *, requested_model: str, key: str) -> tuple[_Completion, str]:
    """Decode a 200 body; a body that carries an error is that error."""
    try:
        completion = _completion_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(
            502, "upstream_error", "OpenRouter answered 200 with a body that is not a completion"
        ) from None
    if completion.error is not None:
        raise error_from_object(completion.error, fallback_status=502, key=key)
    if not completion.choices:
        raise UpstreamError(502, "upstream_error", "OpenRouter answered with no choices")
    choice = completion.choices[0]
    if choice.error is not None or choice.finish_reason == "error":
        error = choice.error or ErrorObject(message="the provider failed while generating")
        raise error_from_object(error, fallback_status=502, key=key)
    return completion, completion.model or requested_model


def _is_event_stream(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("text/event-stream")


def _not_a_stream(body: bytes, key: str) -> UpstreamError:
    """The error a 200 answer that is not an event stream stands for."""
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        error = None
    if error is None:
        return UpstreamError(
            502, "upstream_error", "OpenRouter answered a stream request with no event stream"
        )
    return error_from_object(error, fallback_status=502, key=key)


async def _read_and_close(response: httpx.Response) -> None:
    """Read the whole body, then close it, whatever happens.

    When the timeout cancels the read of a body that never ends, the connection is hung up
    on instead of being held open, and read from, forever.
    """
    try:
        await response.aread()
    finally:
        await response.aclose()


class OpenRouterClient:
    """Calls OpenRouter with the caller's key; retries only what cannot have been billed.

    Requests go straight to an httpx transport: an `AsyncClient` would add URL merging,
    cookie extraction, auth and redirect handling we do not use, at about a third of the
    cost of a request.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        base_url: str,
        retries: int,
        timeout: httpx.Timeout,
        app_url: str,
        app_title: str,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._transport = transport
        base = base_url.rstrip("/")
        self._chat_url = httpx.URL(f"{base}/chat/completions")
        self._models_url = httpx.URL(f"{base}/models")
        self._generation_url = httpx.URL(f"{base}/generation")
        # A stream's reads are bounded by the read timeout, its longest silence; a whole
        # answer only by the deadline of the call (`_timeout`), so aiohttp need not restart a
        # timer at every read of it.
        self._stream_extensions = {"timeout": timeout.as_dict()}
        self._answer_extensions = {"timeout": {**timeout.as_dict(), "read": None}}
        self._retries = retries
        self._timeout = timeout.read or 120.0
        self._jitter = jitter
        attribution = (
            (b"HTTP-Referer", app_url),
            (b"X-Title", app_title),
            (b"X-OpenRouter-Title", app_title),
        )
        self._fixed_headers = [
            (b"Host", self._chat_url.netloc),
            *((name, value.encode()) for name, value in attribution if value),
        ]

    async def _request(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        stream: bool = False,
    ) -> httpx.Response:
        """One request on the transport; the response body is not read yet.

        Built from a stream, the request has exactly the headers given: httpx adds none (Host
        and Content-Length are ours), which costs a third of working them out every call.
        """
        if body or method == "POST":
            headers = [*headers, (b"Content-Length", str(len(body)).encode())]
        extensions = self._stream_extensions if stream else self._answer_extensions
        request = httpx.Request(
            method, url, headers=headers, stream=httpx.ByteStream(body), extensions=extensions
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

    def _headers(self, key: str, accept: bytes) -> list[tuple[bytes, bytes]]:
        return [
            *self._fixed_headers,
            (b"Authorization", b"Bearer " + key.encode()),
            (b"Content-Type", b"application/json"),
            (b"Accept", accept),
        ]

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when not worth waiting for."""
        if retry_after is not None:
            if retry_after > MAX_RETRY_AFTER_SECONDS:
                return None
            return retry_after + self._jitter() * BACKOFF_BASE_SECONDS
        return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (1 << attempt)) * self._jitter()

    async def _send(self, key: str, payload: bytes, *, stream: bool) -> httpx.Response:
        """Post the request, retrying connection failures and 408/502/503.

        With `stream=True` a 200 response is returned open: its body has not been read.
        """
        headers = self._headers(key, b"text/event-stream" if stream else b"application/json")
        attempt = 0
        while True:
            try:
                response = await self._request(
                    "POST", self._chat_url, headers, payload, stream=stream
                )
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt >= self._retries:
                    raise
                delay = self._backoff(attempt, None)
            else:
                if response.status_code == 200 and stream:
                    return response
                await _read_and_close(response)
                if response.status_code not in RETRY_STATUSES or attempt >= self._retries:
                    return response
                delay = self._backoff(
                    attempt, retry_after_seconds(response.headers.get("retry-after"))
                )
                if delay is None:
                    return response
            attempt += 1
            await asyncio.sleep(delay or 0.0)

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Failures of the connection, as the errors our clients see."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise UpstreamError(
                502, "upstream_unreachable", "could not connect to OpenRouter"
            ) from None
        except httpx.PoolTimeout:
            raise UpstreamError(
                503,
                "upstream_busy",
                "too many calls to OpenRouter in flight; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        except httpx.RemoteProtocolError:
            raise UpstreamError(
                502,
                "upstream_disconnected",
                "the connection to OpenRouter was lost after the request was sent; it may "
                "have been received, so it was not sent again",
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamError(
                504, "upstream_timeout", f"OpenRouter did not answer within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                502, "upstream_error", f"the connection to OpenRouter failed: {type(exc).__name__}"
            ) from None

    async def _answer(self, key: str, payload: bytes, *, stream: bool) -> httpx.Response:
        """A 200 answer to a chat request (open, when streaming); anything else raises."""
        with self._transport_errors():
            async with asyncio.timeout(self._timeout):
                response = await self._send(key, payload, stream=stream)
                if stream and response.status_code == 200 and not _is_event_stream(response):
                    # A stream asked for, JSON answered: an error, sent with a 200.
                    await _read_and_close(response)
                    raise _not_a_stream(response.content, key)
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content, response.headers, key)
        return response

    async def complete(self, key: str, payload: bytes, *, requested_model: str) -> Completion:
        """One non-streaming completion."""
        started = time.perf_counter()
        response = await self._answer(key, payload, stream=False)
        latency_ms = (time.perf_counter() - started) * 1000
        completion, model = parse_completion(
            response.content, requested_model=requested_model, key=key
        )
        choice = completion.choices[0] if completion.choices else _Choice()
        return Completion(
            content=(choice.message.content if choice.message else None) or "",
            model=model,
            finish_reason=choice.finish_reason,
            generation_id=completion.id or response.headers.get("x-generation-id"),
            usage=(completion.usage or WireUsage()).public(),
            latency_ms=round(latency_ms, 1),
            tool_calls=choice.message.tool_calls if choice.message else None,
            reasoning_details=(choice.message.reasoning_details or None)
            if choice.message
            else None,
            body=response.content,
        )

    async def open_stream(self, key: str, payload: bytes) -> UpstreamStream:
        """Start a streaming completion; errors before the first byte raise `UpstreamError`."""
        started = time.perf_counter()
        response = await self._answer(key, payload, stream=True)
        return UpstreamStream(response, key=key, started=started)

    async def fetch_models(self) -> bytes:
        """OpenRouter's model list, as the bytes it sent (checked to hold a `data` list)."""
        headers = [
            (b"Host", self._models_url.netloc),
            (b"Accept", b"application/json"),
        ]
        with self._transport_errors():
            async with asyncio.timeout(self._timeout):
                response = await self._request("GET", self._models_url, headers)
                await _read_and_close(response)
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content, response.headers, "")
        try:
            _models_decoder.decode(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError(
                502, "upstream_error", "OpenRouter's model list is not the expected JSON"
            ) from None
        return response.content

    async def fetch_generation(self, key: str, generation_id: str) -> GenerationRecord | None:
        """What OpenRouter recorded for a generation; None while it has no record of it yet
        (404: records are indexed a moment after the generation ends)."""
        url = self._generation_url.copy_with(params={"id": generation_id})
        headers = [
            (b"Host", url.netloc),
            (b"Authorization", b"Bearer " + key.encode()),
            (b"Accept", b"application/json"),
        ]
        with self._transport_errors():
            async with asyncio.timeout(self._timeout):
                response = await self._request("GET", url, headers)
                await _read_and_close(response)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content, response.headers, key)
        try:
            data = _generation_decoder.decode(response.content).data
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError(
                502, "upstream_error", "OpenRouter's generation record is not the expected JSON"
            ) from None
        prompt, completion = _count(data.tokens_prompt), _count(data.tokens_completion)
        cost = _cost(data.total_cost)
        if prompt is None or completion is None or cost is None:
            return None  # not the figures of a finished generation: asked again later
        return GenerationRecord(prompt, completion, cost)


class UpstreamStream:
    """An open OpenRouter stream."""

    def __init__(self, response: httpx.Response, *, key: str, started: float) -> None:
        self._response = response
        self._key = key
        self.started = started
        self.generation_id = response.headers.get("x-generation-id")
        self.saw_done = False

    async def batches(self) -> AsyncIterator[list[tuple[bytes, StreamChunk]]]:
        """Events as sent and decoded, grouped by the network read that brought them, up to
        `[DONE]`.

        Transport failures and timeouts surface as `UpstreamError`.
        """
        try:
            async for events in sse_batches(self._response.aiter_raw()):
                if self.saw_done:
                    continue  # read to the end, so the connection goes back to the pool
                batch: list[tuple[bytes, StreamChunk]] = []
                for data in events:
                    if data == DONE:
                        self.saw_done = True
                        break
                    try:
                        batch.append((data, _chunk_decoder.decode(data)))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        raise UpstreamError(
                            502, "upstream_error", "OpenRouter sent a stream event that is not JSON"
                        ) from None
                if batch:
                    yield batch
        except httpx.TimeoutException:
            raise UpstreamError(
                504, "upstream_timeout", "OpenRouter stopped sending in the middle of the answer"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                502, "upstream_error", f"the stream from OpenRouter broke: {type(exc).__name__}"
            ) from None

    def error(self, error: ErrorObject) -> UpstreamError:
        return error_from_object(error, fallback_status=502, key=self._key)

    async def aclose(self) -> None:
        """Close the connection: for most providers this stops the generation and its billing."""
        await self._response.aclose()
