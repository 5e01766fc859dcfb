"""A deployment on loopback: Redis as compose runs it, API replicas and a worker as the
Procfile runs them, and HAProxy with the shipped configuration in front."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import yaml

from app.cli.devstack import port_open
from tests.support.processes import ROOT, ProcfileProcess, WebProcess
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable


def compose_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def compose_config(name: str) -> str:
    """A file that compose.yaml ships inline (`configs:`), as a container sees it."""
    content: str = compose_file()["configs"][name]["content"]
    # `$$` is compose's escape of `$`.
    return content.replace("$$", "$")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `condition` holds; generous timeouts, for a loaded machine."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class DurableRedis:
    """Debian's redis-server with the persistence compose.yaml gives Redis, on loopback."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="redis-durable-")
        command = compose_file()["services"]["redis"]["command"]
        self.persistence = [str(part) for part in command[1:]]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        args = [self.binary, *self.persistence, "--port", str(self.port), "--bind", "127.0.0.1"]
        self._process = subprocess.Popen(
            [*args, "--dir", self._dir.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), 20, "redis to listen")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


class Balancer:
    """HAProxy in the foreground with the shipped configuration and a loopback backend."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="haproxy-")
        config = Path(self._dir.name) / "haproxy.cfg"
        config.write_text(compose_config("haproxy"))
        backend = Path(self._dir.name) / "backend.cfg"
        lines = [
            "backend api",
            # Which replica answered, for the tests only.
            "    http-response set-header X-Served-By %[srv_name]",
        ]
        lines += [f"    server {name} 127.0.0.1:{port}" for name, port in servers.items()]
        backend.write_text("\n".join(lines) + "\n")
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self._process = subprocess.Popen(
            [binary, "-db", "-f", str(config), "-f", str(backend)],
            env={**os.environ, "LB_BIND": f"127.0.0.1:{self.port}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), 20, "haproxy to listen")

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=20)
        self._dir.cleanup()


class Cluster:
    """Redis, `replicas` web processes, one worker and HAProxy, all on 127.0.0.1."""

    def __init__(self, env: dict[str, str], replicas: int = 3) -> None:
        self._closing = ExitStack()
        try:
            self.redis = DurableRedis()
            self._closing.callback(self.redis.close)
            self.redis.start()
            self.env = {**env, "REDIS_URL": self.redis.url}
            self.webs = {f"web{i + 1}": WebProcess(self.env, free_port()) for i in range(replicas)}
            for web in self.webs.values():
                self._closing.callback(web.close)
                web.start()
            self.worker = ProcfileProcess("worker", self.env)
            self._closing.callback(self.worker.close)
            self.worker.start()
            self.balancer = Balancer({name: web_port(web) for name, web in self.webs.items()})
            self._closing.callback(self.balancer.close)
            self.wait_all_in_rotation()
        except BaseException:
            self._closing.close()
            raise

    def in_rotation(self) -> set[str]:
        """Replicas that answered through the balancer in a round of requests."""
        seen = set()
        with httpx.Client(base_url=self.balancer.url, timeout=5) as client:
            for _ in range(len(self.webs) * 2):
                try:
                    response = client.get("/health")
                except httpx.TransportError:
                    continue
                if response.status_code == 200:
                    seen.add(response.headers.get("x-served-by", ""))
        return seen

    def wait_all_in_rotation(self, timeout: float = 60) -> None:
        wait_for(lambda: self.in_rotation() == set(self.webs), timeout, "every replica")

    def restart(self, name: str) -> None:
        web = self.webs[name]
        web.stop()
        web.start()

    def kill(self, name: str) -> None:
        os.killpg(self.webs[name].pid, signal.SIGKILL)

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)

    def restart_worker(self) -> None:
        self.worker.stop()
        self.worker.start()

    def close(self) -> None:
        self._closing.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def web_port(web: WebProcess) -> int:
    return int(web.url.rsplit(":", 1)[1])
