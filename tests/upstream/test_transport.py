"""The httpx transport over aiohttp (`app.upstream.transport`), against the stand-in over
real HTTP."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from app.upstream.transport import AiohttpTransport
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.standin import StandinServer

TIMEOUT = httpx.Timeout(5.0, read=1.0)


def chat_request(
    url: str, key: str, *, stream: bool = False, accept: str = "application/json"
) -> httpx.Request:
    body: dict[str, object] = {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    return httpx.Request(
        "POST",
        url,
        json=body,
        headers={"Authorization": f"Bearer {key}", "Accept": accept},
        extensions={"timeout": TIMEOUT.as_dict()},
    )


def run(test: Callable[[AiohttpTransport], Awaitable[None]]) -> None:
    async def with_transport() -> None:
        transport = AiohttpTransport(max_connections=4, keepalive_seconds=30)
        try:
            await test(transport)
        finally:
            await transport.aclose()

    asyncio.run(with_transport())


def key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


def test_a_json_answer_comes_back_read(standin: StandinServer) -> None:
    async def test(transport: AiohttpTransport) -> None:
        response = await transport.handle_async_request(
            chat_request(f"{standin.base_url}/chat/completions", key())
        )
        assert response.status_code == 200
        # No read needed: `content` is there at once.
        answer = msgspec.json.decode(response.content)
        assert answer["choices"][0]["message"]["content"]
        assert response.headers["content-type"].startswith("application/json")
        # Read and closed, as httpx leaves a response it has read: nothing left to do.
        assert (response.is_stream_consumed, response.is_closed) == (True, True)
        assert await response.aread() == response.content == response.read()
        await response.aclose()
        assert response.json() == answer
        assert response.num_bytes_downloaded == 0  # httpx counted nothing: it read nothing

    run(test)


def test_an_event_stream_comes_back_open(standin: StandinServer) -> None:
    async def test(transport: AiohttpTransport) -> None:
        response = await transport.handle_async_request(
            chat_request(f"{standin.base_url}/chat/completions", key(), stream=True)
        )
        assert response.status_code == 200
        with pytest.raises(httpx.ResponseNotRead):
            _ = response.content
        body = b"".join([chunk async for chunk in response.aiter_raw()])
        await response.aclose()
        assert body.rstrip().endswith(b"data: [DONE]")

    run(test)


def test_an_answer_to_a_request_accepting_a_stream_comes_back_open(
    standin: StandinServer,
) -> None:
    async def test(transport: AiohttpTransport) -> None:
        request = chat_request(
            f"{standin.base_url}/chat/completions", key(), accept="text/event-stream"
        )
        response = await transport.handle_async_request(request)
        assert response.headers["content-type"].startswith("application/json")
        with pytest.raises(httpx.ResponseNotRead):
            _ = response.content
        answer = msgspec.json.decode(await response.aread())
        await response.aclose()
        assert answer["choices"][0]["message"]["content"]

    run(test)


def test_a_stream_left_early_hangs_up(standin: StandinServer) -> None:
    caller = key()
    standin.control.script(caller, {"chunk_delay": 0.2})

    async def test(transport: AiohttpTransport) -> None:
        response = await transport.handle_async_request(
            chat_request(f"{standin.base_url}/chat/completions", caller, stream=True)
        )
        async for _ in response.aiter_raw():
            break
        await response.aclose()
        # The stand-in sees the client leave: the generation stops.
        for _ in range(50):
            if any(r["cancelled"] for r in standin.control.requests(caller)):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(standin.control.requests(caller))

    run(test)


def test_connection_refused_is_a_connect_error() -> None:
    async def test(transport: AiohttpTransport) -> None:
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(
                chat_request(f"http://127.0.0.1:{free_port()}/chat/completions", key())
            )

    run(test)


def test_a_body_that_stalls_is_a_read_timeout(standin: StandinServer) -> None:
    caller = key()
    standin.control.script(caller, {"hang": True})

    async def test(transport: AiohttpTransport) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(
                chat_request(f"{standin.base_url}/chat/completions", caller)
            )

    run(test)


def test_a_body_cut_short_is_a_read_error(standin: StandinServer) -> None:
    caller = key()
    standin.control.script(caller, {"cut_after": 10})

    async def test(transport: AiohttpTransport) -> None:
        with pytest.raises(httpx.ReadError):
            await transport.handle_async_request(
                chat_request(f"{standin.base_url}/chat/completions", caller)
            )

    run(test)


def test_every_way_a_request_ends_gives_its_connection_slot_back(
    standin: StandinServer,
) -> None:
    caller = key()
    url = f"{standin.base_url}/chat/completions"

    def pooled(request: httpx.Request) -> httpx.Request:
        request.extensions["timeout"] = {"pool": 0.2}
        return request

    async def test(transport: AiohttpTransport) -> None:
        # A JSON answer read; a stream read to its end; a stream left early.
        await transport.handle_async_request(chat_request(url, caller))
        whole = await transport.handle_async_request(chat_request(url, caller, stream=True))
        await whole.aread()
        await whole.aclose()
        left = await transport.handle_async_request(chat_request(url, caller, stream=True))
        await left.aclose()
        # A connection refused, and an answer cancelled while it was being read.
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(
                chat_request(f"http://127.0.0.1:{free_port()}/chat/completions", caller)
            )
        standin.control.script(caller, {"endless": True})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await transport.handle_async_request(chat_request(url, caller))
        # All four slots are free: four requests at once, none waiting for one.
        answers = await asyncio.gather(
            *(transport.handle_async_request(pooled(chat_request(url, caller))) for _ in range(4))
        )
        assert [answer.status_code for answer in answers] == [200] * 4
        # And a fifth, while four are held, waits its pool timeout and is refused.
        held = [
            await transport.handle_async_request(chat_request(url, caller, stream=True))
            for _ in range(4)
        ]
        with pytest.raises(httpx.PoolTimeout):
            await transport.handle_async_request(pooled(chat_request(url, caller)))
        for response in held:
            await response.aclose()

    run(test)
