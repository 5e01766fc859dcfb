"""The app's real processes, started the way the Procfile starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

ROOT = Path(__file__).resolve().parents[2]


def procfile_command(name: str) -> str:
    """The shell command of one Procfile entry."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        entry, sep, command = line.partition(":")
        if sep and entry.strip() == name:
            return command.strip()
    raise KeyError(f"no {name!r} entry in the Procfile")


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment, the venv's scripts first on PATH, and the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "REDIS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ProcfileProcess:
    """One Procfile entry running under `sh -c`, with its output in a file."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = process_env(env)
        self.command = procfile_command(name)
        self.cwd = ROOT
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open for the process's life
            prefix=f"{name}-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM, without waiting for the process to end."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code of a process that is ending by itself."""
        assert self._process is not None
        return self._process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, as a platform stops a dyno; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        code = self._process.returncode
        self._process = None
        return code

    def close(self) -> None:
        self.stop()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class WebProcess(ProcfileProcess):
    """The `web:` entry: the API, answering on `url` once `/health` does."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        super().__init__("web", {**env, "PORT": str(port)})
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        super().start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"web exited at start:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"web did not answer within {timeout} s:\n{self.logs()}")
