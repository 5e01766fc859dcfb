"""The API of another revision against this tree's, side by side: the before and after of a
change, measured in one run on the same machine.

    BENCH_BASELINE=HEAD~1 python -m pytest -m benchmark -s tests/benchmarks/test_versions.py

The baseline is checked out in a temporary git worktree, installed in a virtualenv of its own
(its pinned dependencies, from pip's cache after the first run) and served by the `web:` entry
of its own Procfile, next to this tree's API, the floor
(`baselines/floor.py`) and one Redis and stand-in for all. Rounds alternate their order as in
`test_cost.py`; figures are medians. Skipped without BENCH_BASELINE. BENCH_AGAINST, a second
revision, takes this tree's place (both then run from worktrees of their own). BENCH_CONNECTIONS
(default 1,8,32), BENCH_ROUNDS (default 5) and BENCH_SECONDS (default 3) tune it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.benchmarks.load import Measured, Uvicorn, measure, wrk
from tests.benchmarks.stack import standin_process
from tests.benchmarks.test_cost import api_settings
from tests.support.processes import ROOT, WebProcess
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.benchmark

BASELINE = os.environ.get("BENCH_BASELINE", "")
AGAINST = os.environ.get("BENCH_AGAINST", "")
CONNECTIONS = tuple(map(int, os.environ.get("BENCH_CONNECTIONS", "1,8,32").split(",")))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def install(checkout: Path, venv: Path) -> Path:
    """A virtualenv holding the checkout's package and its pinned dependencies."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = ["-c", str(checkout / ".ci" / "constraints.txt")]
    subprocess.run([*pip, *constraints, str(checkout)], check=True, timeout=600)
    return venv


class RevisionWeb(WebProcess):
    """The `web:` entry of another checkout, run by its own virtualenv."""

    def __init__(self, checkout: Path, venv: Path, env: dict[str, str], port: int) -> None:
        path = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        super().__init__({**env, "PATH": path}, port)
        self.cwd = checkout
        lines = (checkout / "Procfile").read_text().splitlines()
        self.command = next(line.partition(":")[2].strip() for line in lines if line[:4] == "web:")


class Checkout:
    """A revision in a temporary git worktree, installed in a virtualenv of its own."""

    def __init__(self, revision: str, folder: Path) -> None:
        self.revision = git("rev-parse", "--short", revision)
        self.tree = folder / self.revision
        git("worktree", "add", "--detach", str(self.tree), self.revision)
        self.venv = install(self.tree, folder / f"{self.revision}-venv")

    def web(self, env: dict[str, str], port: int) -> WebProcess:
        return RevisionWeb(self.tree, self.venv, env, port)

    def remove(self) -> None:
        git("worktree", "remove", "--force", str(self.tree))


@pytest.mark.skipif(not BASELINE, reason="set BENCH_BASELINE to a git revision")
def test_this_tree_against_a_baseline_revision() -> None:
    with tempfile.TemporaryDirectory(prefix="revisions-") as folder:
        made = [Checkout(revision, Path(folder)) for revision in (BASELINE, AGAINST) if revision]
        try:
            rows = compare(*made)
        finally:
            for checkout in made:
                checkout.remove()
    names = [checkout.revision for checkout in made]
    if len(names) == 1:
        names.append("this tree")
    print(f"\n{' against '.join(names)}, medians of {ROUNDS} rounds of {SECONDS:g} s")
    print("| connections | server | turns/s | p50 ms | CPU per turn | x floor |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {:,.0f} | {:.2f} | {:,.0f} us | {:.2f} |".format(*row))


def compare(
    baseline: Checkout, against: Checkout | None = None
) -> list[tuple[int, str, float, float, float, float]]:
    with standin_process() as (port, _), RedisServer() as server:
        env = {"OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1", "REDIS_URL": server.url}
        settings = api_settings(env)
        second = (
            WebProcess(settings, free_port())
            if against is None
            else against.web(settings, free_port())
        )
        with (
            second,
            baseline.web(settings, free_port()) as first,
            Uvicorn("tests.benchmarks.baselines.floor:app", free_port(), env) as floor,
        ):
            targets = {
                "floor": (floor.pid, floor.url),
                baseline.revision: (first.pid, first.url),
                "this tree" if against is None else against.revision: (second.pid, second.url),
            }
            for _, url in targets.values():
                wrk(url, 32, 2, "chat")  # warm up
            rows: list[tuple[int, str, float, float, float, float]] = []
            for connections in CONNECTIONS:
                runs: dict[str, list[Measured]] = {target: [] for target in targets}
                for round_number in range(ROUNDS):
                    order = list(targets.items())[:: 1 if round_number % 2 else -1]
                    for target, (pid, url) in order:
                        found = measure(pid, url, connections, SECONDS, "chat")
                        assert found.load.failed == 0, (target, connections, found.load)
                        runs[target].append(found)
                cpu = {t: statistics.median(m.cpu_us_per_turn for m in r) for t, r in runs.items()}
                for target, measured in runs.items():
                    rows.append(
                        (
                            connections,
                            target,
                            statistics.median(m.load.rate for m in measured),
                            statistics.median(m.load.p50_ms for m in measured),
                            cpu[target],
                            cpu[target] / cpu["floor"],
                        )
                    )
    return rows
