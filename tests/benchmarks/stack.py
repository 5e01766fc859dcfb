"""The processes a benchmark measures: Redis, the stand-in and the API, each its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

from tests.standin import StandinControl
from tests.support.processes import ROOT, WebProcess, process_env
from tests.support.redis_server import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


class Stack(msgspec.Struct):
    api: WebProcess
    standin_port: int
    control: StandinControl
    redis_url: str

    @property
    def api_port(self) -> int:
        return int(self.api.url.rsplit(":", 1)[1])


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (Linux /proc): the API's uvicorn
    workers, when WEB_CONCURRENCY starts several."""
    total = 0
    for member in _tree(pid):
        try:
            fields = _stat(member)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> set[int]:
    """A process and its children."""
    tree = {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    tree.add(int(entry.name))
            except (OSError, IndexError):
                continue
    return tree


def pin(pids: set[int], cpus: set[int]) -> None:
    """Every thread of these processes on `cpus`."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def api_core() -> set[int] | None:
    """The core the API gets to itself in a pinned run, when the machine has two or more."""
    cpus = os.sched_getaffinity(0)
    return {max(cpus)} if len(cpus) >= 2 else None


@contextmanager
def standin_process() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The stand-in in a process of its own: its port and process."""
    port = free_port()
    standin = subprocess.Popen(
        [sys.executable, "-m", "tests.standin", "--port", str(port), "--max-records", "1000"],
        cwd=ROOT,
        env=process_env({}),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_standin/stats", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or standin.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port, standin
    finally:
        standin.terminate()
        standin.wait(timeout=10)


@contextmanager
def running_stack(*, pinned: bool = False, **env: str) -> Iterator[Stack]:
    """Redis, the stand-in and the API, each its own process.

    `pinned`: the API gets a core to itself and everything else (this process, the stand-in,
    Redis) shares the others, as when the API runs on its own machine; without it all
    compete for all cores.
    """
    own = api_core() if pinned else None
    everyone = os.sched_getaffinity(0)
    if own is not None:
        pin({os.getpid()}, everyone - own)
    try:
        with standin_process() as (port, standin), RedisServer() as redis:
            settings = {
                "APP_ENV": "production",
                "SESSION_SECRET": "benchmark-" + "s" * 40,
                "REDIS_URL": redis.url,
                "OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1",
                "LOG_LEVEL": "INFO",
                # Every simulated client shares one key: a limit that never binds, still checked.
                "RATE_LIMIT_PER_MINUTE": "100000000",
                **env,
            }
            with (
                WebProcess(settings, free_port()) as api,
                StandinControl(f"http://127.0.0.1:{port}") as control,
            ):
                if own is not None:
                    others = {standin.pid} | ({redis.process.pid} if redis.process else set())
                    pin(others, everyone - own)
                    pin(_tree(api.pid), own)
                yield Stack(api=api, standin_port=port, control=control, redis_url=redis.url)
    finally:
        if own is not None:
            pin({os.getpid()}, everyone)
