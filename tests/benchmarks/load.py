"""wrk as the load generator, and what a process spent during its run (Linux /proc)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.benchmarks.stack import _tree, cpu_seconds
from tests.support.processes import ROOT, process_env

CHAT_SCRIPT = ROOT / "tests" / "benchmarks" / "chat.lua"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkResult(msgspec.Struct, frozen=True):
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int  # non-2xx answers
    errors: str  # socket errors, as wrk reports them

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, seconds: float, *args: str) -> WrkResult:
    """`connections` kept-alive connections for `seconds` (rounded: wrk takes whole seconds),
    `tests/benchmarks/chat.lua` building the requests (`args` go to its init)."""
    binary = shutil.which("wrk")
    if binary is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    threads = min(2, connections)
    command = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--latency", "--timeout", "30s", "-s", str(CHAT_SCRIPT), url, "--", *args]
    output = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    assert done is not None, output
    return WrkResult(
        requests=int(done[1]),
        seconds=_ms(done[2] + done[3]) / 1000,
        p50_ms=_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M)[1]),  # type: ignore[index]
        p99_ms=_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M)[1]),  # type: ignore[index]
        failed=int((re.search(r"Non-2xx or 3xx responses: (\d+)", output) or ["", "0"])[1]),
        errors=(re.search(r"Socket errors: (.*)", output) or ["", "none"])[1],
    )


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(found[1]) if found else 0
    return total / 1024


class Measured(msgspec.Struct, frozen=True):
    """One load run against one server process."""

    load: WrkResult
    cpu_us_per_turn: float
    rss_mb: float


def measure(pid: int, url: str, connections: int, seconds: float, *args: str) -> Measured:
    before = cpu_seconds(pid)
    load = wrk(url, connections, seconds, *args)
    cpu = cpu_seconds(pid) - before
    return Measured(
        load=load, cpu_us_per_turn=cpu * 1e6 / max(load.requests, 1), rss_mb=rss_mb(pid)
    )


class Uvicorn:
    """An ASGI app of the benchmark under uvicorn, with the flags `chat-backend web` gives it."""

    def __init__(self, app: str, port: int, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._port = port
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
        command += ["--port", str(port), "--proxy-headers", "--no-access-log"]
        command += ["--log-level", "warning"]
        self._process = subprocess.Popen(command, cwd=ROOT, env=process_env(env))

    @property
    def pid(self) -> int:
        return self._process.pid

    def __enter__(self) -> Uvicorn:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"{self.url} did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        self._process.terminate()
        self._process.wait(timeout=15)
