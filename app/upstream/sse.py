"""Server-sent events: the decoder of OpenRouter's stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator


async def sse_batches(chunks: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    """The `data` of the events each network read completes, per the SSE spec.

    Events come in batches so that a relay can forward what one read brought in one write.
    Comment lines (OpenRouter's `: OPENROUTER PROCESSING` keep-alives) and fields other than
    `data` are skipped; several `data:` lines of one event are joined with newlines; an event
    is dispatched at a blank line. Lines may end in LF, CRLF or CR. An event cut off before its
    blank line is incomplete: per the spec it is not dispatched.
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
        events = _dispatch(lines, data)
        if events:
            yield events
    if buffer == b"\r":
        # The stream ended on a lone CR: it was a whole line end after all.
        events = _dispatch([b""], data)
        if events:
            yield events


def _dispatch(lines: list[bytes], data: list[bytes]) -> list[bytes]:
    """Feed complete lines; returns the events they complete. `data` carries over."""
    events: list[bytes] = []
    for line in lines:
        if not line:
            payload = b"\n".join(data)
            # Per the spec, an event whose data is empty is not dispatched.
            if payload:
                events.append(payload)
            data.clear()
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # Comments (":...") and other fields (event:, id:, retry:) carry nothing we use.
    return events
