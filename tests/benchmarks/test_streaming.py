"""Streaming through the backend against the stand-in called directly, many streams at once.

Prints time to first byte and to the first text event, both ways, and the backend's CPU time
per relayed chunk. Target: the backend adds under 2 ms to time to first byte at 100 concurrent
streams.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from typing import TYPE_CHECKING

import msgspec
import pytest

from tests.benchmarks.client import Connection, StreamTiming
from tests.benchmarks.stack import Stack, api_core, cpu_seconds, running_stack

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.benchmark

CONCURRENCY = 100
SECONDS = 10.0  # of steady load per run
WORDS = 100  # the stand-in echoes them: one chunk per word
FIRST_TOKEN_SECONDS = 0.2
RATE = 25  # chunks a second, as a fast model streams
KEY = "sk-or-v1-" + "b" * 64
MESSAGE = " ".join(f"w{i}" for i in range(WORDS))


def stream_seconds(rate: int) -> float:
    return FIRST_TOKEN_SECONDS + (WORDS + 2) / rate


async def _load(
    port: int, path: str, body: Callable[[int, int], bytes], rate: int
) -> list[StreamTiming]:
    """CONCURRENCY streams open at all times: each client opens the next when one ends.

    Start times are spread over one stream's length, as arrivals are in steady traffic; a
    burst of 100 at the same instant would measure queueing, not the cost of one stream.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS

    async def client(index: int) -> list[StreamTiming]:
        await asyncio.sleep(stream_seconds(rate) * index / CONCURRENCY)
        connection = await Connection.open("127.0.0.1", port)
        timings: list[StreamTiming] = []
        try:
            while loop.time() < deadline:
                request = body(index, len(timings))
                timings.append(await connection.stream("127.0.0.1", path, request, KEY))
        finally:
            connection.close()
        return timings

    per_client = await asyncio.gather(*(client(i) for i in range(CONCURRENCY)))
    return [timing for timings in per_client for timing in timings]


def _percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:7.2f}  p90 {q[89]:7.2f}  p99 {q[98]:7.2f}"


def _direct_body(index: int, turn: int) -> bytes:
    """What the API sends upstream on this client's `turn`: the whole conversation so far
    (the stand-in answers `Echo <n>: <message>`), so both sides carry the same payload."""
    messages: list[dict[str, str]] = []
    for earlier in range(1, turn + 1):
        messages.append({"role": "user", "content": MESSAGE})
        messages.append({"role": "assistant", "content": f"Echo {earlier}: {MESSAGE}"})
    messages.append({"role": "user", "content": MESSAGE})
    return msgspec.json.encode({"model": "openai/gpt-4o", "stream": True, "messages": messages})


def _run(stack: Stack, rate: int, *, direct: bool) -> tuple[list[StreamTiming], float]:
    step = {"first_token_delay": FIRST_TOKEN_SECONDS, "chunk_delay": 1 / rate, "keepalives": 2}
    # More steps than streams can run in the time; the rest are dropped by the next reset.
    stack.control.reset()
    stack.control.script(KEY, *([step] * int(CONCURRENCY * SECONDS / stream_seconds(rate) * 1.5)))
    run = secrets.token_hex(4)

    def api_body(index: int, turn: int) -> bytes:
        # Each client continues its own session: the history is read and replayed each turn.
        request = {"message": MESSAGE, "model": "openai/gpt-4o", "stream": True}
        return msgspec.json.encode({**request, "session_id": f"bench-{run}-{index}"})

    if direct:
        port, path, body = stack.standin_port, "/api/v1/chat/completions", _direct_body
    else:
        port, path, body = stack.api_port, "/chat", api_body
    cpu_before = cpu_seconds(stack.api.pid)
    timings = asyncio.run(_load(port, path, body, rate))
    cpu = cpu_seconds(stack.api.pid) - cpu_before
    assert all(t.status == 200 for t in timings), {t.status for t in timings}
    return timings, cpu


@pytest.mark.parametrize("pinned", [False, True], ids=["shared-cores", "api-own-core"])
def test_streaming_overhead(pinned: bool) -> None:
    rate = RATE
    if pinned and api_core() is None:
        pytest.skip("one core: the API cannot have one to itself")
    with running_stack(pinned=pinned) as stack:
        _run(stack, rate, direct=False)  # warm both paths: connections, scripts, caches
        direct, _ = _run(stack, rate, direct=True)
        backend, cpu = _run(stack, rate, direct=False)
    chunks = sum(t.chunks for t in backend)
    assert all(t.chunks == WORDS + 2 for t in [*direct, *backend])
    ttfb_direct = [t.first_byte_ms for t in direct]
    ttfb_backend = [t.first_byte_ms for t in backend]
    token_direct = [t.first_token_ms for t in direct]
    token_backend = [t.first_token_ms for t in backend]
    cores = "the API on a core of its own" if pinned else "all processes sharing all cores"
    print(
        f"\nstreaming, {cores}: {CONCURRENCY} concurrent streams of {WORDS + 2} chunks at "
        f"{rate} chunks/s for {SECONDS:g} s; {len(direct)} direct, {len(backend)} through the "
        "backend (ms)"
    )
    print(f"  first byte,  direct   {_percentiles(ttfb_direct)}")
    print(f"  first byte,  backend  {_percentiles(ttfb_backend)}")
    print(f"  first token, direct   {_percentiles(token_direct)}")
    print(f"  first token, backend  {_percentiles(token_backend)}")
    added_byte = statistics.median(ttfb_backend) - statistics.median(ttfb_direct)
    added_token = statistics.median(token_backend) - statistics.median(token_direct)
    print(
        f"  added by the backend (medians): first byte {added_byte:.2f} ms, "
        f"first token {added_token:.2f} ms"
    )
    print(
        f"  backend CPU: {cpu * 1e6 / chunks:.1f} us per relayed chunk "
        f"({cpu * 1000 / len(backend):.2f} ms per stream, turn commit included)"
    )
