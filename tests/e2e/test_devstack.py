"""`chat-backend dev`, the Quick start's serve command: the API and the worker as the Procfile
runs them, next to a Redis, until it is told to stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.conftest import base_env, bearer
from tests.support.processes import ROOT, process_env
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from tests.standin import StandinServer


def test_the_dev_stack_serves_a_turn_with_its_worker_and_stops_cleanly(
    redis_url: str, standin: StandinServer, api_key: str, tmp_path: Path
) -> None:
    port = free_port()
    env = process_env({**base_env(redis_url, standin), "PORT": str(port)})
    log = tmp_path / "devstack.log"
    with log.open("wb") as output:
        stack = subprocess.Popen(
            [str(Path(sys.executable).parent / "chat-backend"), "dev"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, health = time.monotonic() + 60, dict[str, object]()
        while time.monotonic() < deadline and health.get("worker") != "ok":
            assert stack.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"{url}/health", timeout=2).json()
            time.sleep(0.2)
        assert health.get("status") == "ok" and health.get("worker") == "ok", health
        turn = httpx.post(f"{url}/chat", json={"message": "hi"}, headers=bearer(api_key))
        assert turn.status_code == 200, turn.text
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGTERM)
        code = stack.wait(timeout=40)
    assert code == 0, log.read_text()
    assert f"devstack | redis at {redis_url}" in log.read_text()
