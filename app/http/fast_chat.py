"""`POST /chat` in plain ASGI: a turn without the framework's cost per request.

Litestar serves every route, `/chat` included. This layer in front of it takes the common
case of `/chat`, a non-streaming turn whose body is valid and whose caller is known, and runs
it on the same `ChatService`, authenticator and error bodies; Litestar's routing, dependency
injection and second validation of the body cost about as much CPU as the rest of the turn.

Whatever it does not take goes on to Litestar untouched, its body replayed when it was read:
other routes, streams, requests with an `Origin` (CORS), bodies that are too large, invalid or
slow to arrive, and callers who would be refused. So each of those answers, every 4xx before
the turn begins included, keeps one implementation; errors of the turn itself (429, 404,
upstream failures, a 503 when Redis is down) are rendered here by the same code as there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType

from app.http.context import request_log
from app.http.errors import as_app_error, error_body
from app.http.routes.chat import parse_body
from app.schemas import ChatRequest

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import (
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        Receive,
        ReceiveMessage,
        Scope,
        Send,
    )

    from app.http.services import Services
    from app.turns.callers import Caller

logger = logging.getLogger("app.chat")

CHAT_PATH = "/chat"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_encoder = msgspec.json.Encoder()


def replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """`receive` that first gives back the messages already read, then reads on."""
    pending = list(messages)

    async def receive_again() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return receive_again


class FastChat:
    """Serves the common `/chat` turn itself and hands every other request to `app`."""

    def __init__(self, app: Litestar, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["path"] != CHAT_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(self.app.state, "services", None)
        authorization = self._authorization(scope) if services is not None else None
        if services is None or authorization is None:
            await self.app(scope, receive, send)
            return
        messages, body = await self._read_body(receive)
        turn = None if body is None else self._accept(services, authorization, body)
        if turn is None:
            await self.app(scope, replaying(messages, receive), send)
            return
        await self._run(scope, send, services, *turn)

    def _authorization(self, scope: Scope) -> str | None:
        """The one Authorization header of a request this layer may take, else None."""
        found: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if found is not None:
                    return None  # two: Litestar refuses them
                found = value
            elif name == b"origin":
                return None  # a browser's request: Litestar's CORS answers it
            elif name == b"content-length" and (
                not value.isdigit() or int(value) > self.max_body_bytes
            ):
                return None
        return None if found is None else found.decode("latin-1")

    async def _read_body(self, receive: Receive) -> tuple[list[ReceiveMessage], bytes | None]:
        """The messages read and the whole body; no body when it was not a plain, complete one
        within the size limit (a disconnect, the body's deadline, too many bytes)."""
        messages: list[ReceiveMessage] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await receive()
            except Exception:  # the body's deadline: Litestar reads on and answers the 408
                return messages, None
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:
                return messages, None
            if not message.get("more_body", False):
                return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _accept(
        services: Services, authorization: str, body: bytes
    ) -> tuple[Caller, ChatRequest, dict[str, Any]] | None:
        """The turn, when its body and caller are good and it does not stream."""
        try:
            request, extras = parse_body(body, ChatRequest)
            caller = services.auth.caller(authorization)
        except Exception:  # Litestar gives the same request its 4xx
            return None
        return None if request.stream else (caller, request, extras)

    @staticmethod
    async def _run(
        scope: Scope,
        send: Send,
        services: Services,
        caller: Caller,
        request: ChatRequest,
        extras: dict[str, Any],
    ) -> None:
        scope["path_template"] = CHAT_PATH  # the route of the request's metrics
        log = request_log(scope)
        log.caller, log.session_id = caller, request.session_id
        try:
            answer = await services.chat.complete(caller, request, extras)
        except Exception as exc:  # each becomes its error body, as in Litestar
            error = as_app_error(exc)
            body = _encoder.encode(error_body(error, CHAT_PATH, log.request_id))
            headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            await _respond(send, error.status, body, headers)
            return
        log.session_id, log.model = answer.session_id, answer.model_used
        log.tokens = answer.tokens_used
        await _respond(send, 200, _encoder.encode(answer))


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            *_JSON_HEADERS,
            (b"content-length", str(len(body)).encode()),
            *(headers or ()),
        ],
    }
    await send(start)
    done: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(done)
