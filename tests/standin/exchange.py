"""One HTTP exchange over raw ASGI: body reading, disconnect watching and byte-exact sending."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tests.standin.asgi import Receive, Scope, Send

Headers = list[tuple[str, str]]


class ConnectionCut(Exception):
    """Raised mid-response: the server closes the connection with the body incomplete."""


class Exchange:
    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = {
            k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()
        }
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        self.disconnected = asyncio.Event()
        self._finishing = False
        self._watcher: asyncio.Task[None] | None = None

    async def read_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def watch_disconnect(self) -> None:
        """Start noticing the client going away; call once the request body has been read."""
        if self._watcher is None and not self.disconnected.is_set():
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                # uvicorn also reports a disconnect once the response is complete; that one
                # is the normal end of the exchange, not the client leaving.
                if not self._finishing:
                    self.disconnected.set()
                return

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def sleep(self, seconds: float) -> bool:
        """Wait, but stop early if the client leaves; True when it has left."""
        if seconds <= 0:
            # Still yield, so the watcher gets a chance to see a disconnect between events.
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.disconnected.wait()
        return self.disconnected.is_set()

    async def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def cut(self) -> None:
        """Break the connection now; uvicorn closes it without ending the body."""
        self._finishing = True
        raise ConnectionCut

    async def drop(self) -> None:
        """Close the connection before any answer. ASGI has no message for that; uvicorn's
        `send` belongs to the request's cycle, which holds the connection's transport."""
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is None:
            raise RuntimeError("the server under the stand-in exposes no transport to close")
        transport.close()
        self.watch_disconnect()
        await self.disconnected.wait()  # uvicorn then sends nothing in place of an answer

    async def end(self, data: bytes = b"") -> None:
        self._finishing = True
        await self._send({"type": "http.response.body", "body": data, "more_body": False})

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        base = [("content-type", content_type), ("content-length", str(len(body)))]
        await self.start(status, merge_headers(base, headers))
        await self.end(body)


def merge_headers(base: Headers, extra: Iterable[tuple[str, str]]) -> Headers:
    """`base` plus `extra`, where a scripted header replaces a default one of the same name."""
    extra = list(extra)
    replaced = {name.lower() for name, _ in extra}
    return [(name, value) for name, value in base if name.lower() not in replaced] + extra
