"""Throughput through HAProxy with one, two and three API replicas (one process each).

wrk sends non-streaming turns, each continuing a session, through the balancer; the stand-in
answers at once, so what limits the rate is CPU: the replicas', and on a small machine that of
everything else sharing its cores (HAProxy, Redis, the stand-in, wrk itself).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.benchmarks.stack import cpu_seconds, standin_process
from tests.support.cluster import Cluster
from tests.support.processes import ROOT

pytestmark = pytest.mark.benchmark

SECONDS = 8
CONNECTIONS = 64
SCRIPT = ROOT / "tests" / "benchmarks" / "turns.lua"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url: str) -> dict[str, str]:
    binary = shutil.which("wrk")
    if binary is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    before = children_cpu_seconds()
    result = subprocess.run(
        [binary, "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", str(SCRIPT), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 60,
    )
    output = result.stdout
    return {
        "rate": re.search(r"Requests/sec:\s+([\d.]+)", output).group(1),  # type: ignore[union-attr]
        "p50": re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1),  # type: ignore[union-attr]
        "p99": re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1),  # type: ignore[union-attr]
        "failed": (re.search(r"Non-2xx or 3xx responses: (\d+)", output) or ["", "0"])[1],
        "errors": (re.search(r"Socket errors: (.*)", output) or ["", "none"])[1],
        "cpu": str(children_cpu_seconds() - before),
    }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, ours or not)."""
    fields = [int(part) for part in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def test_throughput_by_replicas() -> None:
    print(
        f"\nturns through HAProxy: wrk, {CONNECTIONS} connections, {SECONDS} s, "
        f"{os.cpu_count()} cores shared by everything"
    )
    with standin_process() as (port, standin):
        env = {
            "APP_ENV": "production",
            "SESSION_SECRET": "benchmark-" + "s" * 40,
            "OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1",
            "MAX_HISTORY_MESSAGES": "10",
            "LOG_LEVEL": "WARNING",
            # Every connection shares one key: a limit that never binds, still checked.
            "RATE_LIMIT_PER_MINUTE": "100000000",
        }
        for replicas in (1, 2, 3):
            with Cluster(env, replicas=replicas) as cluster:
                wrk(cluster.balancer.url)  # warm up: connections, scripts, sessions
                pids = {
                    "API": [web.pid for web in cluster.webs.values()],
                    "haproxy": [cluster.balancer.pid],
                    "redis": [cluster.redis.pid],
                    "stand-in": [standin.pid],
                }
                before = {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}
                machine_before = machine_busy_seconds()
                found = wrk(cluster.balancer.url)
                machine = machine_busy_seconds() - machine_before
                used = {
                    name: sum(map(cpu_seconds, group)) - before[name]
                    for name, group in pids.items()
                }
                used["wrk"] = float(found["cpu"])
            print(
                f"  {replicas} replica(s): {float(found['rate']):7.0f} turns/s, "
                f"p50 {found['p50']}, p99 {found['p99']}, "
                f"non-2xx {found['failed']}, socket errors: {found['errors']}"
            )
            # A refused turn is no turn: the rate is of answered ones only.
            assert found["failed"] == "0", f"{found['failed']} answers were not 2xx"
            turns = float(found["rate"]) * SECONDS
            print(
                "    cores busy: "
                + ", ".join(f"{name} {seconds / SECONDS:.2f}" for name, seconds in used.items())
                + f" (whole machine {machine / SECONDS:.2f})"
                + f"; API CPU {used['API'] * 1000 / turns:.2f} ms per turn"
            )
