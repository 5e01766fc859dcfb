"""CPU per turn by concurrency: the API against a floor, the seed's design and the stand-in.

Every server runs at once, side by side, and wrk loads one at a time: the stand-in called
directly with the turn the API sends it (the upstream's own cost), the floor (the least a
Python turn costs: `baselines/floor.py`), the seed's design (`baselines/seed.py`) and the API
with every feature on (metrics, rate limits, request logs). Each turn continues a session with
a 10-message history. Each target is measured in several short rounds, the order of targets
reversed every other round, and each figure is the median over the rounds: the speed of this
VM drifts by 10-20% within a minute, and the rounds let every target see the same drift.
Prints a table, and writes it with a plot to `tests/benchmarks/results/`.

    python -m pytest -m benchmark -s tests/benchmarks/test_cost.py

BENCH_CONNECTIONS (default 1,8,32,128,256), BENCH_ROUNDS (default 3) and BENCH_SECONDS (per
round, default 3) shorten or lengthen it.
`test_memory_stays_flat` serves BENCH_LONG_TURNS turns (default 100,000) and follows the API's
RSS on the way.
"""

from __future__ import annotations

import os
import statistics
from typing import cast

import msgspec
import pytest
import redis

from tests.benchmarks.load import Measured, Uvicorn, measure, wrk
from tests.benchmarks.stack import standin_process
from tests.support.processes import ROOT, WebProcess
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.benchmark

CONNECTIONS = tuple(map(int, os.environ.get("BENCH_CONNECTIONS", "1,8,32,128,256").split(",")))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
LONG_TURNS = int(os.environ.get("BENCH_LONG_TURNS", "100000"))
# Growth of the API's RSS past warm-up that a long run may show: allocator noise, not a leak.
RSS_SLACK_MB = 8.0
RESULTS = ROOT / "tests" / "benchmarks" / "results"
TARGETS = ("stand-in direct", "floor", "seed design", "API")


class Row(msgspec.Struct, frozen=True):
    target: str
    connections: int
    turns_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_turn: float
    redis_round_trips: float
    rss_mb: float
    failed: int


def reads_processed(client: redis.Redis) -> int:
    """Redis read events: at least one per round trip, so an upper bound on round trips."""
    return cast("dict[str, int]", client.info("stats"))["total_reads_processed"]


def median_row(target: str, connections: int, runs: list[tuple[Measured, float]]) -> Row:
    """One row: the median of each figure over the rounds."""
    loads = [found.load for found, _ in runs]
    return Row(
        target=target,
        connections=connections,
        turns_per_second=statistics.median(load.rate for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=statistics.median(load.p99_ms for load in loads),
        cpu_us_per_turn=statistics.median(found.cpu_us_per_turn for found, _ in runs),
        redis_round_trips=statistics.median(trips for _, trips in runs),
        rss_mb=max(found.rss_mb for found, _ in runs),
        failed=sum(load.failed for load in loads),
    )


def table(rows: list[Row]) -> str:
    floor = {row.connections: row.cpu_us_per_turn for row in rows if row.target == "floor"}
    lines = [
        "| connections | server | turns/s | p50 ms | p99 ms | CPU per turn | x floor "
        "| Redis round trips per turn | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.cpu_us_per_turn / floor[row.connections] if row.connections in floor else 0
        lines.append(
            f"| {row.connections} | {row.target}{f' ({row.failed} failed)' if row.failed else ''} "
            f"| {row.turns_per_second:,.0f} "
            f"| {row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.cpu_us_per_turn:,.0f} us "
            f"| {ratio:.2f} | {row.redis_round_trips:.2f} | {row.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for target in TARGETS:
        mine = [row for row in rows if row.target == target]
        x = [row.connections for row in mine]
        rate.plot(x, [row.turns_per_second for row in mine], marker="o", label=target)
        cpu.plot(x, [row.cpu_us_per_turn for row in mine], marker="o", label=target)
    for axes, label in ((rate, "turns/s"), (cpu, "CPU per turn of the server (us)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(CONNECTIONS, [str(connections) for connections in CONNECTIONS])
        axes.set_yscale("log")
        axes.set_xlabel("concurrent connections (wrk)")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
    rate.legend()
    figure.suptitle("Non-streaming turns, 10-message history, stand-in upstream answering at once")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def api_settings(env: dict[str, str]) -> dict[str, str]:
    """Every feature on: request logs, metrics, a rate limit (one that never binds: every
    connection shares one key)."""
    return {
        **env,
        "APP_ENV": "production",
        "SESSION_SECRET": "benchmark-" + "s" * 40,
        "LOG_LEVEL": "INFO",
        "MAX_HISTORY_MESSAGES": "10",
        "RATE_LIMIT_PER_MINUTE": "1000000000",
        # At 256 connections one saturated core delays the event loop past the default 0.5 s,
        # and Redis calls time out as if Redis were away (503s): measured are turns, not that.
        "REDIS_TIMEOUT_SECONDS": "5",
    }


def test_turn_cost_by_concurrency() -> None:
    with standin_process() as (port, standin), RedisServer() as server:
        upstream = f"http://127.0.0.1:{port}/api/v1"
        env = {"OPENROUTER_BASE_URL": upstream, "REDIS_URL": server.url}
        settings = api_settings(env)
        redis_client = redis.Redis.from_url(server.url)
        with (
            WebProcess(settings, free_port()) as api,
            Uvicorn("tests.benchmarks.baselines.floor:app", free_port(), env) as floor,
            Uvicorn("tests.benchmarks.baselines.seed:app", free_port(), env) as seed,
        ):
            targets = {
                "stand-in direct": (standin.pid, f"http://127.0.0.1:{port}", "direct"),
                "floor": (floor.pid, floor.url, "chat"),
                "seed design": (seed.pid, seed.url, "chat"),
                "API": (api.pid, api.url, "chat"),
            }
            for _, url, mode in targets.values():
                wrk(url, 32, 2, mode)  # warm up: connections, scripts, 10-message histories
            rows: list[Row] = []
            for connections in CONNECTIONS:
                runs: dict[str, list[tuple[Measured, float]]] = {target: [] for target in targets}
                for round_number in range(ROUNDS):
                    order = list(targets.items())
                    for target, (pid, url, mode) in order[:: 1 if round_number % 2 else -1]:
                        reads = reads_processed(redis_client)
                        found = measure(pid, url, connections, SECONDS, mode)
                        # Minus one: the read of this INFO itself.
                        trips = reads_processed(redis_client) - reads - 1
                        # The seed design's own failures under load are part of what it is.
                        if target != "seed design":
                            assert found.load.failed == 0, (target, connections, found.load)
                        runs[target].append((found, trips / max(found.load.requests, 1)))
                rows.extend(median_row(target, connections, runs[target]) for target in targets)
        redis_client.close()
    text = table(rows)
    print(
        f"\nmedians of {ROUNDS} rounds of {SECONDS:g} s, {os.cpu_count()} cores shared by "
        f"everything\n{text}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "turns.md").write_text(text + "\n")
    (RESULTS / "turns.json").write_bytes(msgspec.json.format(msgspec.json.encode(rows)))
    plot(rows, str(RESULTS / "turns.png"))


def test_memory_stays_flat() -> None:
    """The API's RSS after each tenth of a long run: warm-up is the first tenth; after it, no
    growth beyond allocator noise."""
    with standin_process() as (port, _), RedisServer() as server:
        env = {"OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1", "REDIS_URL": server.url}
        with WebProcess(api_settings(env), free_port()) as api:
            served, elapsed = 0, 0.0
            samples: list[tuple[int, float]] = []
            while served < LONG_TURNS:
                # A tenth of the run per chunk, at the rate seen so far.
                seconds = LONG_TURNS / 10 / (served / elapsed) if served else 5.0
                found = measure(api.pid, api.url, 32, seconds, "chat")
                assert found.load.failed == 0, found.load
                served += found.load.requests
                elapsed += found.load.seconds
                samples.append((served, found.rss_mb))
    print(f"\nAPI RSS over {served:,} turns at 32 connections:")
    print("  " + ", ".join(f"{turns:,}: {rss:.1f} MB" for turns, rss in samples))
    warm = samples[0][1] if len(samples) == 1 else samples[1][1]
    assert max(rss for _, rss in samples[1:]) <= warm + RSS_SLACK_MB, samples
