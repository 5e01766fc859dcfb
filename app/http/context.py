"""The request context: a request id and a log line per request, a deadline for its body."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from app.errors import RequestTimeout
from app.ids import random_id
from app.ops import prometheus
from app.turns.request_log import RequestLog

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

logger = logging.getLogger("app.request")

# A client's X-Request-ID is kept only if it cannot break a log line or a header.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_log(scope: Scope) -> RequestLog:
    """The log of this request (a blank one outside the middleware, e.g. in unit tests)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    log = state.get("request_log")
    if not isinstance(log, RequestLog):
        log = state["request_log"] = RequestLog(random_id())
    return log


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return value.decode()
    return random_id()


def receive_by(receive: Receive, deadline: float, seconds: float) -> Receive:
    """`receive` that gives up on a request body still incomplete at `deadline` (loop time).

    uvicorn waits for a body as long as the client keeps the connection open: one byte a
    minute would hold a request, and its memory, forever. The 408 closes the connection.
    """
    body_done = False

    async def receive_in_time() -> ReceiveMessage:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(seconds) from None
        body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_in_time


class RequestContextMiddleware:
    """Outermost ASGI layer, so 404s and 405s get a request id and a log line too."""

    def __init__(self, app: ASGIApp, *, body_timeout: float) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        prometheus.request_started()
        log = RequestLog(_request_id(scope))
        scope.setdefault("state", {})["request_log"] = log
        header = (b"x-request-id", log.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.status = message["status"]
                log.first_byte = time.perf_counter()
                message["headers"] = [*message.get("headers", ()), header, *log.quota_headers()]
            await send(message)

        deadline = asyncio.get_running_loop().time() + self.body_timeout
        try:
            await self.app(scope, receive_by(receive, deadline, self.body_timeout), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            prometheus.request_finished(
                scope.get("path_template"), log.status, elapsed, log.request_id
            )
            # uvicorn puts the load balancer's X-Forwarded-For here when the peer is trusted.
            client = scope.get("client")
            fields: dict[str, Any] = {
                "request_id": log.request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": log.status,
                "duration_ms": round(elapsed * 1000, 2),
            }
            if client:
                fields["client"] = client[0]
            if log.first_byte:
                # For a stream, how long the client waited for the answer to begin.
                fields["first_byte_ms"] = round((log.first_byte - started) * 1000, 2)
            if log.caller is not None and log.caller.name is not None:
                fields["app"] = log.caller.name
            if log.session_id is not None:
                fields["session_id"] = log.session_id
            if log.model is not None:
                fields["model"] = log.model
            if log.tokens is not None:
                fields["tokens"] = log.tokens
            logger.info(
                "%s %s %s", scope["method"], scope["path"], log.status, extra={"fields": fields}
            )
