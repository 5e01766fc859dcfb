"""`POST /chat` in plain ASGI (`app.http.fast_chat`): the common turn served beside Litestar,
the same answers either way, and everything else left to Litestar.

A request with an `Origin` header always goes through Litestar (its CORS): the same request
with and without one compares the two implementations over HTTP. In-process, Litestar marks
the scope of each request it routes (`route_handler`), which tells who served a request.
"""

from __future__ import annotations

import asyncio
import gc
import re
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from app.http.asgi import create_app
from app.http.fast_chat import FastChat
from app.http.services import YOUNG_COLLECTION_THRESHOLD
from app.settings import load_settings
from tests.conftest import base_env, bearer
from tests.e2e.test_chat import chat_ok

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

ORIGIN = {"Origin": "http://page.example"}
# Headers that only Litestar's CORS adds, and those of the moment.
CORS_OR_VOLATILE = re.compile(r"access-control-.*|vary|date|x-request-id|content-length")


def shape(response: httpx.Response) -> tuple[int, list[str], Any]:
    """What must not differ between the two paths: status, header names and the body's
    fields, with the values of the moment (ids, times, echoed counters) left out."""
    names = sorted({name for name in response.headers if not CORS_OR_VOLATILE.fullmatch(name)})
    body = response.json()

    def fields(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: fields(item) for key, item in value.items()}
        return type(value).__name__

    return response.status_code, names, fields(body)


def both_ways(http: httpx.Client, key: str, **body: Any) -> tuple[httpx.Response, httpx.Response]:
    fast = http.post("/chat", json=body, headers=bearer(key))
    framework = http.post("/chat", json=body, headers={**bearer(key), **ORIGIN})
    assert "access-control-allow-origin" in framework.headers
    assert "access-control-allow-origin" not in fast.headers
    return fast, framework


def test_a_turn_answers_alike_both_ways(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    fast, framework = both_ways(client, api_key, message="hello", session_id="alike")
    assert fast.status_code == 200, fast.text
    assert shape(fast) == shape(framework)
    assert fast.json()["session_id"] == framework.json()["session_id"] == "alike"
    # Both turns landed in the same session, in order.
    assert redis_client.llen("chat:{alike}:messages") == 4


def test_errors_of_a_turn_answer_alike_both_ways(
    client: httpx.Client, api_key: str, standin: StandinServer
) -> None:
    owned = chat_ok(client, api_key, message="mine")["session_id"]
    other = "sk-or-v1-" + "c" * 64
    not_yours = both_ways(client, other, message="hi", session_id=owned)
    assert [r.status_code for r in not_yours] == [404, 404]
    assert shape(not_yours[0]) == shape(not_yours[1])

    standin.control.script(api_key, {"status": 402}, {"status": 402})
    no_credits = both_ways(client, api_key, message="hi")
    assert [r.status_code for r in no_credits] == [402, 402]
    assert no_credits[0].json()["error"] | {"request_id": ""} == no_credits[1].json()["error"] | {
        "request_id": ""
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"message": 5}, 400),
        ({"message": "hi", "max_tokens": "10"}, 400),
        ({"message": "hi", "unknown_model_field": 1, "temperature": 9}, 400),
    ],
)
def test_refused_bodies_answer_alike_both_ways(
    client: httpx.Client, api_key: str, body: dict[str, Any], status: int
) -> None:
    fast, framework = both_ways(client, api_key, **body)
    assert fast.status_code == framework.status_code == status
    assert fast.json()["error"] | {"request_id": ""} == framework.json()["error"] | {
        "request_id": ""
    }


def test_a_rate_limited_turn_answers_alike_both_ways(
    start_api: Callable[..., WebProcess], api_key: str, redis_client: redis.Redis
) -> None:
    api = start_api(RATE_LIMIT_PER_MINUTE="1")
    with httpx.Client(base_url=api.url, timeout=30) as http:
        chat_ok(http, api_key, message="the one turn of the minute")
        fast, framework = both_ways(http, api_key, message="one more")
    assert fast.status_code == framework.status_code == 429
    assert shape(fast) == shape(framework)
    assert fast.headers["retry-after"] == framework.headers["retry-after"]


class Served(msgspec.Struct):
    status: int
    body: bytes
    by_litestar: bool


async def serve(
    app: Any, body: bytes, headers: list[tuple[bytes, bytes]], *, chunks: int = 1
) -> Served:
    """One request straight into the ASGI app, its body in `chunks` messages."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/chat",
        "raw_path": b"/chat",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    size = -(-len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
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
    return Served(start["status"], content, "route_handler" in scope)


@pytest.fixture
def in_process(redis_url: str, standin: StandinServer, redis_client: redis.Redis) -> Any:
    app = create_app(load_settings(base_env(redis_url, standin)))
    fast = app.app  # type: ignore[attr-defined]
    assert isinstance(fast, FastChat)
    return app, fast.app


def test_the_common_turn_is_served_without_litestar(in_process: Any, api_key: str) -> None:
    app, litestar = in_process
    auth = [(b"authorization", f"Bearer {api_key}".encode())]

    async def run() -> list[Served]:
        async with litestar.lifespan():
            body = b'{"message": "hi", "session_id": "in-process"}'
            return [
                await serve(app, body, auth),
                await serve(app, body, auth, chunks=3),  # a body in pieces
                await serve(app, body, [*auth, (b"origin", b"http://page.example")]),
                await serve(app, b'{"message": "hi", "stream": true}', auth),
                await serve(app, b'{"message": 5}', auth),
                await serve(app, body, []),
                await serve(app, body, [*auth, *auth]),
            ]

    whole, pieces, browser, stream, invalid, anonymous, twice = asyncio.run(run())
    assert (whole.status, whole.by_litestar) == (200, False)
    assert (pieces.status, pieces.by_litestar) == (200, False)
    assert msgspec.json.decode(pieces.body)["session_id"] == "in-process"
    # Everything else is Litestar's, and answers as it always did.
    assert (browser.status, browser.by_litestar) == (200, True)
    assert (stream.status, stream.by_litestar) == (200, True)
    assert b'"type":"done"' in stream.body
    assert (invalid.status, invalid.by_litestar) == (400, True)
    assert (anonymous.status, anonymous.by_litestar) == (401, True)
    assert (twice.status, twice.by_litestar) == (401, True)


def test_a_body_over_the_limit_is_litestars_413(in_process: Any, api_key: str) -> None:
    app, litestar = in_process
    auth = [(b"authorization", f"Bearer {api_key}".encode())]
    body = b'{"message": "' + b"x" * 1_100_000 + b'"}'

    async def run() -> tuple[Served, Served]:
        async with litestar.lifespan():
            declared = await serve(app, body, [*auth, (b"content-length", str(len(body)).encode())])
            undeclared = await serve(app, body, auth, chunks=4)
            return declared, undeclared

    declared, undeclared = asyncio.run(run())
    assert (declared.status, declared.by_litestar) == (413, True)
    assert (undeclared.status, undeclared.by_litestar) == (413, True)


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
