"""A minimal HTTP/1.1 client for benchmarks: low, steady overhead, so that what it measures
is the server's time, not the client's."""

from __future__ import annotations

import asyncio
import re
import time

import msgspec

_CONTENT = re.compile(rb'"content":"[^"]')


class StreamTiming(msgspec.Struct):
    """One streamed answer, seen from the client."""

    status: int
    first_byte_ms: float  # the first byte of the response
    first_token_ms: float  # the first event that carries text
    total_ms: float
    chunks: int  # events that carried text


async def _read_chunked(reader: asyncio.StreamReader) -> bytes | None:
    size_line = await reader.readline()
    size = int(size_line.split(b";")[0].strip() or b"0", 16)
    if size == 0:
        await reader.readline()
        return None
    data = await reader.readexactly(size)
    await reader.readexactly(2)
    return data


class Connection:
    """One kept-alive HTTP/1.1 connection, as browsers and HTTP client libraries keep them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def _request(self, host: str, path: str, body: bytes, key: str) -> int:
        """Send a POST; returns the status once the status line is in."""
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self._writer.drain()
        return int((await self._reader.readline()).split()[1])

    async def _headers(self) -> dict[bytes, bytes]:
        headers = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return headers

    async def post(self, host: str, path: str, body: bytes, key: str) -> tuple[int, bytes]:
        """A JSON request; the answer has a Content-Length."""
        status = await self._request(host, path, body, key)
        length = int((await self._headers()).get(b"content-length", b"0"))
        return status, await self._reader.readexactly(length)

    async def stream(self, host: str, path: str, body: bytes, key: str) -> StreamTiming:
        """A streaming request; reads the whole chunked answer, timing its first text event."""
        started = time.perf_counter()
        status = await self._request(host, path, body, key)
        first_byte = time.perf_counter()
        await self._headers()
        first_token = 0.0
        chunks = 0
        while (data := await _read_chunked(self._reader)) is not None:
            found = len(_CONTENT.findall(data))
            if found and not first_token:
                first_token = time.perf_counter()
            chunks += found
        ended = time.perf_counter()
        return StreamTiming(
            status=status,
            first_byte_ms=(first_byte - started) * 1000,
            first_token_ms=((first_token or ended) - started) * 1000,
            total_ms=(ended - started) * 1000,
            chunks=chunks,
        )

    def close(self) -> None:
        self._writer.close()
