"""Turn routes in plain ASGI: in Litestar's router, without its per-request pipeline.

`POST /chat` and `POST /v1/chat/completions` are Litestar ASGI route handlers. Litestar's
router, CORS and exception handlers serve them as they serve every route (an error raised here
is rendered by `app.http.errors`, like any other); what they skip is dependency injection, the
lenient conversion of the body that then had to be redone strictly, and response objects. That
pipeline cost a turn 21-30% of its CPU (1.65-1.87x the floor of the repo's benchmark, against
1.27-1.47x); the layers kept in front of every route cost 3-6%, too little to go around them.

Here a turn's request is read once, with the limits Litestar applies to every other body
(`MAX_BODY_BYTES`, and the body's deadline of `app.http.context`), and its answer written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
from litestar import asgi
from litestar.types import HTTPScope, Receive, Scope, Send

from app.errors import (
    ClientDisconnected,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    from_msgspec,
)
from app.http.context import request_log
from app.http.dependencies import authenticate
from app.turns.streaming import StreamRelay

if TYPE_CHECKING:
    from litestar.handlers import ASGIRouteHandler
    from litestar.openapi.spec import Operation
    from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent

    from app.http.services import Services
    from app.turns.callers import Caller
    from app.turns.request_log import RequestLog
    from app.turns.service import PreparedTurn
    from app.turns.streaming import EventFormat
    from app.upstream.client import UpstreamStream

T = TypeVar("T")

_ALLOWED = "OPTIONS, POST"
_JSON = (b"content-type", b"application/json")
_EVENT_STREAM = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # nginx and several platforms' proxies buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]
# The key of a route's `TurnRouteDoc` in its handler's `opt` (read by `routes.docs`).
OPENAPI_OPT = "openapi"


def parse_body(body: bytes, kind: type[T]) -> tuple[T, dict[str, Any]]:
    """The request, typed strictly, and its raw fields (the extras go upstream as sent)."""
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return msgspec.convert(raw, kind), raw
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None


@dataclass(slots=True)
class TurnRequest:
    """What a turn route's handler is given: the caller, the body, and the request."""

    scope: Scope
    services: Services
    caller: Caller
    body: bytes
    log: RequestLog

    def relay(
        self, turn: PreparedTurn, upstream: UpstreamStream, events: EventFormat
    ) -> StreamRelay:
        """The relay of this request's stream, with the keep-alive interval of the settings."""
        return StreamRelay(
            chat=self.services.chat,
            caller=self.caller,
            turn=turn,
            upstream=upstream,
            events=events,
            keepalive_seconds=self.services.settings.stream_keepalive_seconds,
            log=self.log,
        )

    def header(self, name: bytes) -> str | None:
        """The first value of a header, by its lower-case name."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None


@dataclass(slots=True)
class JSONAnswer:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class StreamAnswer:
    relay: StreamRelay
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnRouteDoc:
    """A turn route's OpenAPI operation, and the structs its `$ref`s name beyond
    `app.schemas`: Litestar documents only its own HTTP routes, so `routes.docs` adds these."""

    method: str
    operation: Operation
    structs: tuple[type[msgspec.Struct], ...] = ()


TurnHandler = Callable[[TurnRequest], Awaitable[JSONAnswer | StreamAnswer]]


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with a 413 once it is larger than `limit` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()  # the body's deadline raises its 408 here
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _authorizations(scope: Scope) -> list[str]:
    return [value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"]


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]


async def _send(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    done: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(done)


def _json_headers(body: bytes, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [_JSON, (b"content-length", str(len(body)).encode()), *_encoded(headers)]


async def _send_stream(send: Send, receive: Receive, answer: StreamAnswer) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 200,
        "headers": [*_EVENT_STREAM, *_encoded(answer.headers)],
    }
    try:
        await send(start)
    except BaseException:
        await answer.relay.abandon()  # its connection, and its slot, go back at once
        raise
    await answer.relay.run(send, receive)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(end)


def turn_route(
    path: str,
    handler: TurnHandler,
    *,
    operation: Operation,
    schemas: tuple[type[msgspec.Struct], ...] = (),
) -> ASGIRouteHandler:
    """`handler` as Litestar's ASGI route at `path`: `POST` only, `operation` its OpenAPI.
    What it raises before the answer begins is rendered by Litestar's exception handlers,
    which are `app.http.errors`', as on every route."""
    doc = TurnRouteDoc("post", operation, schemas)

    @asgi(path, is_mount=False, copy_scope=False, name=handler.__name__, opt={OPENAPI_OPT: doc})
    async def serve(scope: HTTPScope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            # A preflight (with `Origin`) is Litestar's CORS; plain OPTIONS is answered here.
            await _send(send, 204, [(b"allow", _ALLOWED.encode())])
            return
        if method != "POST":
            raise MethodNotAllowed(method, path, _ALLOWED)
        services = cast("Services", scope["litestar_app"].state.services)
        log = request_log(scope)
        log.caller = caller = await authenticate(services, _authorizations(scope), scope["client"])
        body = await read_body(scope, receive, services.settings.max_body_bytes)
        turn = await handler(TurnRequest(scope, services, caller, body, log))
        if isinstance(turn, JSONAnswer):
            await _send(send, 200, _json_headers(turn.body, turn.headers), turn.body)
        else:
            await _send_stream(send, receive, turn)

    return serve
