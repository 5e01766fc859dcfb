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


async def post_stream(host: str, port: int, path: str, body: bytes, key: str) -> StreamTiming:
    """POST `body`, read the whole (chunked) response, and time its first text event."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        first_byte = time.perf_counter()
        status = int(status_line.split()[1])
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        first_token = 0.0
        chunks = 0
        while True:
            data = await _read_chunked(reader) if chunked else await reader.read(65536)
            if not data:
                break
            found = len(_CONTENT.findall(data))
            if found and not first_token:
                first_token = time.perf_counter()
            chunks += found
        ended = time.perf_counter()
    finally:
        writer.close()
    return StreamTiming(
        status=status,
        first_byte_ms=(first_byte - started) * 1000,
        first_token_ms=((first_token or ended) - started) * 1000,
        total_ms=(ended - started) * 1000,
        chunks=chunks,
    )


class Connection:
    """One kept-alive HTTP/1.1 connection for JSON requests (Content-Length responses)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, host: str, path: str, body: bytes, key: str) -> tuple[int, bytes]:
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await self._writer.drain()
        status = int((await self._reader.readline()).split()[1])
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        self._writer.close()
