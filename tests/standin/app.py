"""The stand-in as a raw ASGI application: routing plus the control and non-chat endpoints."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import msgspec

from tests.standin import wire
from tests.standin.catalogue import Catalogue
from tests.standin.chat import auth_error, handle_chat, send_reply_override
from tests.standin.exchange import ConnectionCut, Exchange
from tests.standin.script import MODELS_DECODER, SCRIPT_DECODER
from tests.standin.state import StandinState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from tests.standin.asgi import ASGIApp, Receive, Scope, Send

API = "/api/v1"
CONTROL = "/_standin"


class StandinApp:
    def __init__(self, catalogue: Catalogue, state: StandinState) -> None:
        self.catalogue = catalogue
        self.state = state
        self.routes: dict[tuple[str, str], Callable[[Exchange], Awaitable[None]]] = {
            ("POST", f"{API}/chat/completions"): self.chat,
            ("GET", f"{API}/models"): self.models,
            ("GET", f"{API}/generation"): self.generation,
            ("POST", f"{CONTROL}/script"): self.script,
            ("GET", f"{CONTROL}/requests"): self.requests,
            ("POST", f"{CONTROL}/reset"): self.reset,
            ("POST", f"{CONTROL}/models"): self.fail_models,
            ("GET", f"{CONTROL}/stats"): self.stats,
        }
        self.paths = {path for _, path in self.routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        ex = Exchange(scope, receive, send)
        handler = self.routes.get((ex.method, ex.path))
        try:
            if handler is not None:
                with contextlib.suppress(ConnectionCut):
                    await handler(ex)
            elif ex.path in self.paths:
                await ex.respond(405, wire.error_body(405, "Method Not Allowed", user_id=False))
            else:
                await ex.respond(404, wire.error_body(404, "Not Found", user_id=False))
        finally:
            await ex.close()

    # ---- upstream API -------------------------------------------------------------------

    async def chat(self, ex: Exchange) -> None:
        await handle_chat(ex, self.state, self.catalogue)

    async def models(self, ex: Exchange) -> None:
        await ex.read_body()
        ex.watch_disconnect()
        self.state.models_requests += 1
        failure = self.state.models_failure
        if failure is not None and await send_reply_override(ex, failure):
            return
        await ex.respond(200, self.catalogue.models_body)

    async def generation(self, ex: Exchange) -> None:
        await ex.read_body()
        message = auth_error(ex.headers.get("authorization"))
        if message is not None:
            await ex.respond(401, wire.error_body(401, message, user_id=False))
            return
        found = self.state.generations.get(ex.query.get("id", ""))
        if found is None:
            await ex.respond(404, wire.error_body(404, "Generation not found"))
            return
        await ex.respond(200, wire.encode({"data": found.data()}))

    # ---- control ------------------------------------------------------------------------

    async def script(self, ex: Exchange) -> None:
        try:
            request = SCRIPT_DECODER.decode(await ex.read_body())
        except msgspec.DecodeError as exc:
            await _bad_control_request(ex, exc)
            return
        queued = self.state.add_steps(request.key, request.steps)
        await ex.respond(200, wire.encode({"queued": queued}))

    async def requests(self, ex: Exchange) -> None:
        await ex.read_body()
        records = self.state.requests(ex.query.get("key"))
        await ex.respond(200, wire.encode({"requests": records}))

    async def reset(self, ex: Exchange) -> None:
        await ex.read_body()
        self.state.reset()
        await ex.respond(200, wire.encode({"ok": True}))

    async def fail_models(self, ex: Exchange) -> None:
        try:
            request = MODELS_DECODER.decode(await ex.read_body())
        except msgspec.DecodeError as exc:
            await _bad_control_request(ex, exc)
            return
        self.state.models_failure = request.fail
        await ex.respond(200, wire.encode({"ok": True}))

    async def stats(self, ex: Exchange) -> None:
        await ex.read_body()
        state = self.state
        body = {
            "models_requests": state.models_requests,
            "chat_requests": state.chat_requests,
            "pending_steps": state.pending_steps(),
        }
        await ex.respond(200, wire.encode(body))


async def _bad_control_request(ex: Exchange, exc: msgspec.DecodeError) -> None:
    # Loud, specific failures: a typo in a test's script should name the offending field.
    await ex.respond(400, wire.error_body(400, str(exc), user_id=False))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_standin_app(
    models_path: Path | None = None, *, max_records: int | None = None
) -> ASGIApp:
    """A fresh stand-in with its own state; `max_records` bounds memory for long benchmark runs."""
    return StandinApp(Catalogue(models_path), StandinState(max_records))


__all__ = ["StandinApp", "create_standin_app"]
