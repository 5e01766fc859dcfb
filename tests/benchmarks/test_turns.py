"""Non-streaming turns through the backend against the stand-in called directly.

Prints latency percentiles both ways, throughput, and the backend's CPU time per turn, with
many clients at once, each continuing its own session (history read from Redis, replayed
upstream and committed each turn).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import msgspec
import pytest

from tests.benchmarks.client import Connection
from tests.benchmarks.stack import Stack, cpu_seconds, running_stack

pytestmark = pytest.mark.benchmark

LOADS = (5, 50)  # clients: a light load, and one that saturates one API process
SECONDS = 6.0
KEY = "sk-or-v1-" + "d" * 64
MESSAGE = " ".join(f"w{i}" for i in range(30))
# The stand-in answers after 20 ms, as a small, fast model might.
UPSTREAM_DELAY = 0.02
STEP = {"delay": UPSTREAM_DELAY}


async def _load(port: int, path: str, bodies: list[bytes]) -> tuple[list[float], float]:
    """One kept-alive connection per body, each sending its next turn when the last is
    answered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS

    async def client(index: int) -> list[float]:
        # Spread over one upstream delay: clients started together stay in lockstep, and
        # their bursts would measure queueing, not the cost of a turn.
        await asyncio.sleep(UPSTREAM_DELAY * index / len(bodies))
        connection = await Connection.open("127.0.0.1", port)
        latencies = []
        try:
            while loop.time() < deadline:
                started = time.perf_counter()
                status, body = await connection.post("127.0.0.1", path, bodies[index], KEY)
                assert status == 200, body
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
        return latencies

    started = time.perf_counter()
    per_client = await asyncio.gather(*(client(i) for i in range(len(bodies))))
    elapsed = time.perf_counter() - started
    return [latency for latencies in per_client for latency in latencies], elapsed


def _run(stack: Stack, clients: int, *, direct: bool) -> tuple[list[float], float, float]:
    stack.control.reset()
    stack.control.script(KEY, *([STEP] * int(clients * SECONDS / UPSTREAM_DELAY)))
    if direct:
        message = {"role": "user", "content": MESSAGE}
        body = msgspec.json.encode({"model": "openai/gpt-4o", "messages": [message]})
        port, path = stack.standin_port, "/api/v1/chat/completions"
        bodies = [body] * clients
    else:
        port, path = stack.api_port, "/chat"
        bodies = [
            msgspec.json.encode(
                {"message": MESSAGE, "model": "openai/gpt-4o", "session_id": f"turns-{index}"}
            )
            for index in range(clients)
        ]
    cpu_before = cpu_seconds(stack.api.pid)
    latencies, elapsed = asyncio.run(_load(port, path, bodies))
    return latencies, elapsed, cpu_seconds(stack.api.pid) - cpu_before


def _line(name: str, latencies: list[float], elapsed: float) -> str:
    q = statistics.quantiles(latencies, n=100)
    return (
        f"  {name:8s} p50 {q[49]:6.2f}  p90 {q[89]:6.2f}  p99 {q[98]:6.2f} ms, "
        f"{len(latencies) / elapsed:6.0f} turns/s"
    )


def test_turn_overhead() -> None:
    print(f"\nturns: {SECONDS:g} s per run, each client continuing its own session")
    with running_stack(MAX_HISTORY_MESSAGES="10") as stack:
        _run(stack, max(LOADS), direct=False)  # warm up: connections, scripts, sessions
        for clients in LOADS:
            direct, direct_elapsed, _ = _run(stack, clients, direct=True)
            backend, backend_elapsed, cpu = _run(stack, clients, direct=False)
            added = statistics.median(backend) - statistics.median(direct)
            print(f" {clients} clients:")
            print(_line("direct", direct, direct_elapsed))
            print(_line("backend", backend, backend_elapsed))
            print(
                f"  added by the backend (medians): {added:.2f} ms; "
                f"backend CPU {cpu * 1000 / len(backend):.2f} ms per turn"
            )
