"""Turns on one Redis against turns on a Redis Cluster of one and of three masters.

The API (as the Procfile runs it, every feature on, as in `test_cost.py`) is loaded by `wrk`
with continuing sessions on each store in turn, its order reversed every other round; figures
are medians. Printed: turns/s, p50, the API's CPU per turn, and the CPU per turn of Redis (all
of its server processes), which is what one shard must carry.

    python -m pytest -m benchmark -s tests/benchmarks/test_cluster.py

BENCH_CONNECTIONS (default 32), BENCH_ROUNDS (default 3) and BENCH_SECONDS (default 3).
"""

from __future__ import annotations

import os
import statistics
from contextlib import ExitStack

import pytest

from tests.benchmarks.load import Measured, measure, wrk
from tests.benchmarks.stack import cpu_seconds, standin_process
from tests.benchmarks.test_cost import api_settings
from tests.conftest import Store
from tests.support.processes import WebProcess
from tests.support.redis_cluster import RedisClusterServer
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.benchmark

CONNECTIONS = tuple(map(int, os.environ.get("BENCH_CONNECTIONS", "32").split(",")))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


def redis_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def test_turns_on_one_redis_and_on_clusters_of_one_and_three_masters() -> None:
    with ExitStack() as stack:
        port, _ = stack.enter_context(standin_process())
        env = {"OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1"}
        standalone = stack.enter_context(RedisServer())
        one = stack.enter_context(RedisClusterServer(masters=1, replicas=0))
        three = stack.enter_context(RedisClusterServer(masters=3, replicas=0))
        stores: dict[str, tuple[Store, list[RedisServer]]] = {
            "one Redis": (Store(standalone.url), [standalone]),
            "cluster, 1 master": (
                Store(one.url, cluster=True, queue_url=standalone.url),
                list(one.nodes),
            ),
            "cluster, 3 masters": (
                Store(three.url, cluster=True, queue_url=standalone.url),
                list(three.nodes),
            ),
        }
        apis = {
            name: stack.enter_context(WebProcess(api_settings({**env, **store.env()}), free_port()))
            for name, (store, _) in stores.items()
        }
        for api in apis.values():
            wrk(api.url, 32, 2, "chat")  # warm up: connections, scripts, histories
        lines = [
            "| connections | store | turns/s | p50 ms | API CPU per turn | Redis CPU per turn |",
            "|---|---|---|---|---|---|",
        ]
        for connections in CONNECTIONS:
            runs: dict[str, list[tuple[Measured, float]]] = {name: [] for name in stores}
            for round_number in range(ROUNDS):
                order = list(stores.items())
                for name, (_, nodes) in order[:: 1 if round_number % 2 else -1]:
                    pids = [node.process.pid for node in nodes if node.process is not None]
                    before = redis_cpu(pids)
                    found = measure(apis[name].pid, apis[name].url, connections, SECONDS, "chat")
                    assert found.load.failed == 0, (name, found.load)
                    redis_us = (redis_cpu(pids) - before) * 1e6 / max(found.load.requests, 1)
                    runs[name].append((found, redis_us))
            for name, measured in runs.items():
                rate = statistics.median(found.load.rate for found, _ in measured)
                p50 = statistics.median(found.load.p50_ms for found, _ in measured)
                api_us = statistics.median(found.cpu_us_per_turn for found, _ in measured)
                redis_us = statistics.median(us for _, us in measured)
                lines.append(
                    f"| {connections} | {name} | {rate:,.0f} | {p50:.2f} | {api_us:,.0f} us "
                    f"| {redis_us:,.0f} us |"
                )
    print(f"\nmedians of {ROUNDS} rounds of {SECONDS:g} s, {os.cpu_count()} cores\n")
    print("\n".join(lines))
