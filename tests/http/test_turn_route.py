"""The turn routes in plain ASGI (`app.http.turn_route`), straight into the app in-process:
each answer of the route itself (a body in pieces, the limits, methods, a client that hangs up)
and what the process keeps off the hot path. The turns' own outcomes are `tests/e2e`'s."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from app.http.asgi import create_app
from app.http.routes.chat import chat_route
from app.http.services import YOUNG_COLLECTION_THRESHOLD
from app.settings import load_settings
from tests.conftest import base_env
from tests.support.redis_state import session_tag

if TYPE_CHECKING:
    import redis

    from tests.standin import StandinServer

LIMIT = 4096


class Served(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes
    route_handler: Any


async def serve(
    app: Any,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    method: str = "POST",
    path: str = "/chat",
    chunks: int = 1,
    hang_up: bool = False,
) -> Served:
    """One request straight into the ASGI app, its body in `chunks` messages; with `hang_up`
    the client disconnects instead of sending the last one."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    if hang_up:
        incoming[-1] = {"type": "http.disconnect"}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # no disconnect while the answer is written
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers_sent = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return Served(start["status"], headers_sent, content, scope.get("route_handler"))


@pytest.fixture
def in_process(redis_url: str, standin: StandinServer, redis_client: redis.Redis) -> Any:
    env = {**base_env(redis_url, standin), "MAX_BODY_BYTES": str(LIMIT)}
    app = create_app(load_settings(env))
    litestar = app.app  # type: ignore[attr-defined]
    return app, litestar


def auth(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


def test_a_turn_is_served_by_the_turn_route(
    in_process: Any, api_key: str, redis_client: redis.Redis
) -> None:
    app, litestar = in_process
    body = b'{"message": "hi", "session_id": "in-process"}'

    async def run() -> list[Served]:
        async with litestar.lifespan():
            return [
                await serve(app, body, auth(api_key)),
                await serve(app, body, auth(api_key), chunks=3),  # a body in pieces
                await serve(app, b'{"message": "hi", "stream": true}', auth(api_key)),
                await serve(app, body, [*auth(api_key), (b"origin", b"http://page.example")]),
            ]

    whole, pieces, stream, browser = asyncio.run(run())
    for served in (whole, pieces, stream, browser):
        assert served.status == 200, served.body
    for served in (whole, browser):
        assert served.route_handler.name == chat_route.name == "chat"
    assert "access-control-allow-origin" in browser.headers
    assert msgspec.json.decode(pieces.body)["session_id"] == "in-process"
    assert whole.headers["content-length"] == str(len(whole.body))
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert b'"type":"done"' in stream.body
    assert redis_client.llen(f"{session_tag(redis_client, 'in-process')}:messages") == 6


def test_a_body_over_the_limit_is_413_declared_or_not(
    in_process: Any, api_key: str, redis_client: redis.Redis
) -> None:
    app, litestar = in_process
    body = b'{"message": "' + b"x" * LIMIT + b'"}'

    async def run() -> tuple[Served, Served, Served]:
        async with litestar.lifespan():
            declared = (b"content-length", str(len(body)).encode())
            return (
                await serve(app, body, [*auth(api_key), declared]),
                await serve(app, body, auth(api_key), chunks=4),
                await serve(app, body[: LIMIT - 100] + b'"}', auth(api_key)),
            )

    declared, streamed, within = asyncio.run(run())
    for served in (declared, streamed):
        assert served.status == 413
        assert msgspec.json.decode(served.body)["error"]["type"] == "payload_too_large"
    assert within.status == 200, within.body


def test_other_methods_are_405_naming_post(in_process: Any, api_key: str) -> None:
    app, litestar = in_process

    async def run() -> tuple[Served, Served, Served]:
        async with litestar.lifespan():
            return (
                await serve(app, b"", auth(api_key), method="GET"),
                await serve(app, b"", [], method="PUT", path="/v1/chat/completions"),
                await serve(app, b"", [], method="OPTIONS"),
            )

    get, put, options = asyncio.run(run())
    assert (get.status, get.headers["allow"]) == (405, "OPTIONS, POST")
    error = msgspec.json.decode(get.body)["error"]
    assert error["type"] == "method_not_allowed"
    assert error["message"] == "GET is not allowed on /chat"
    assert put.status == 405
    assert "code" in msgspec.json.decode(put.body)["error"]  # OpenAI's shape under /v1
    assert (options.status, options.headers["allow"]) == (204, "OPTIONS, POST")


def test_refused_callers_and_bodies_are_our_4xx(in_process: Any, api_key: str) -> None:
    app, litestar = in_process
    body = b'{"message": "hi"}'

    async def run() -> list[Served]:
        async with litestar.lifespan():
            return [
                await serve(app, body, []),
                await serve(app, body, [*auth(api_key), *auth(api_key)]),
                await serve(app, b'{"message": 5}', auth(api_key)),
                await serve(app, b"{nope", auth(api_key)),
                await serve(app, b"{nope", [*auth(api_key), (b"origin", b"http://page.example")]),
            ]

    anonymous, twice, invalid, not_json, routed = asyncio.run(run())
    # With `Origin`, through Litestar's CORS, the same error.
    assert routed.status == 400
    assert "access-control-allow-origin" in routed.headers
    assert msgspec.json.decode(routed.body)["error"]["message"] == (
        "the request body is not valid JSON"
    )
    assert anonymous.status == twice.status == 401
    assert "more than one" in msgspec.json.decode(twice.body)["error"]["message"]
    assert invalid.status == 400
    assert msgspec.json.decode(invalid.body)["error"]["field"] == "message"
    assert not_json.status == 400
    assert msgspec.json.decode(not_json.body)["error"]["message"] == (
        "the request body is not valid JSON"
    )


def test_a_client_that_hangs_up_mid_body_costs_nothing(
    in_process: Any, api_key: str, redis_client: redis.Redis, standin: StandinServer
) -> None:
    app, litestar = in_process
    before = len(standin.control.requests(api_key))

    async def run() -> Served:
        async with litestar.lifespan():
            body = b'{"message": "hi", "session_id": "gone"}'
            return await serve(app, body, auth(api_key), chunks=2, hang_up=True)

    gone = asyncio.run(run())
    assert gone.status == 499
    assert redis_client.exists(f"{session_tag(redis_client, 'gone')}:messages") == 0
    assert len(standin.control.requests(api_key)) == before


def test_the_collector_is_kept_off_the_hot_path(in_process: Any) -> None:
    _, litestar = in_process
    gc.unfreeze()
    threshold = gc.get_threshold()

    async def run() -> tuple[int, int]:
        async with litestar.lifespan():
            return gc.get_freeze_count(), gc.get_threshold()[0]

    try:
        frozen, young = asyncio.run(run())
        assert frozen > 10_000  # the modules, routes and clients, at least
        assert young == YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
