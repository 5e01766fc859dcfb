"""What `app.upstream.transport` leans on of httpx beyond its public interface, checked against
the installed httpx, so that an upgrade that changes it fails here, by name.

- `httpx.Response._content`: a response the transport read whole is handed over as read. httpx
  keeps a read body there, and `content`, `read` and `aread` return it without another pass
  through its decoders.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import pytest

from app.upstream.transport import ReadResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

WHO = f"httpx {httpx.__version__}"


class _Unreadable(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError(f"{WHO} read a body it already holds")
        yield b""  # unreachable: makes this an async generator


def test_httpx_keeps_a_read_body_in_content() -> None:
    response = httpx.Response(200, content=b"{}")
    assert response._content == b"{}", f"{WHO}: a read body is no longer in `_content`"
    unread = httpx.Response(200, stream=_Unreadable())
    with pytest.raises(httpx.ResponseNotRead):
        _ = unread.content
    assert not hasattr(unread, "_content"), f"{WHO}: `_content` exists before a read"


def test_a_response_read_by_the_transport_is_read_for_httpx() -> None:
    request = httpx.Request("POST", "https://example.invalid/api/v1/chat/completions")
    response = ReadResponse(200, [(b"content-type", b"application/json")], b'{"a":1}', request)
    response.stream = _Unreadable()  # httpx must not iterate it again

    async def read() -> bytes:
        body = await response.aread()
        await response.aclose()
        return body

    assert response.content == b'{"a":1}', WHO
    assert asyncio.run(read()) == b'{"a":1}', WHO
    assert response.json() == {"a": 1}, WHO
    assert response.is_closed and response.is_stream_consumed, WHO
