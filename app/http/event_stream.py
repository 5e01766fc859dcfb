"""The SSE response of a streaming turn: Litestar's response, its body written by the relay."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Response
from litestar.response.streaming import ASGIStreamingResponse

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.response.base import ASGIResponse
    from litestar.types import Receive, Send

    from app.turns.streaming import StreamRelay

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and several platforms' proxies buffer responses unless told not to.
    "X-Accel-Buffering": "no",
}


class _EventStreamASGI(ASGIStreamingResponse):
    """Litestar's streaming ASGI response (no Content-Length), its body sent by the relay."""

    __slots__ = ("relay",)

    def __init__(self, relay: StreamRelay, headers: dict[str, Any]) -> None:
        super().__init__(iterator=(), headers=headers, media_type="text/event-stream")
        self.relay = relay

    async def send_body(self, send: Send, receive: Receive) -> None:
        await self.relay.run(send, receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class EventStream(Response[bytes]):
    """The SSE response of a streaming turn."""

    __slots__ = ("relay",)

    def __init__(self, relay: StreamRelay, headers: dict[str, str] | None = None) -> None:
        super().__init__(
            b"", media_type="text/event-stream", headers={**STREAM_HEADERS, **(headers or {})}
        )
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
