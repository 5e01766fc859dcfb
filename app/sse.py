"""Server-sent events: a decoder for OpenRouter's stream and the framing of ours."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

KEEPALIVE = b": keep-alive\n\n"


async def sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The `data` of each event in a byte stream, per the SSE spec.

    Comment lines (OpenRouter's `: OPENROUTER PROCESSING` keep-alives) and fields other than
    `data` are skipped; several `data:` lines of one event are joined with newlines; an event
    is dispatched at a blank line. Lines may end in LF, CRLF or CR.
    """
    buffer = b""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            # A CR at the very end may be half of a CRLF: keep it until the next chunk.
            head, tail = (buffer[:-1], b"\r") if buffer.endswith(b"\r") else (buffer, b"")
            buffer = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # Comments (":...") and other fields (event:, id:, retry:) carry nothing we use.
    # An event cut off before its blank line is incomplete: per the spec it is not dispatched.


def frame(payload: bytes) -> bytes:
    """One SSE event: a `data:` line and a blank line (the JSON payload holds no newline)."""
    return b"data: " + payload + b"\n\n"
