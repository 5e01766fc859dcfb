"""SIGTERM, as a platform or Docker stops a replica: in-flight work finishes, then exit 0."""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest

from tests.conftest import base_env, bearer
from tests.support.cluster import wait_for
from tests.support.processes import ProcfileProcess
from tests.support.redis_state import stored_messages

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

WORDS = 30


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_an_open_stream_finishes_after_sigterm_and_the_process_exits_0(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    content = " ".join(f"word{i}" for i in range(WORDS))
    standin.control.script(api_key, {"content": content, "chunk_delay": 0.1})
    web = start_api(SHUTDOWN_GRACE_SECONDS="30")
    port = int(web.url.rsplit(":", 1)[1])
    events = []
    with (
        httpx.Client(base_url=web.url, timeout=30) as http,
        http.stream(
            "POST", "/chat", json={"message": "long", "stream": True}, headers=bearer(api_key)
        ) as response,
    ):
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(msgspec.json.decode(line[6:]))
            if len(events) == 1:
                web.terminate()
                # No new connections while the stream goes on.
                wait_for(lambda: refuses_connections(port), 10, "the port to close")

    assert events[-1]["type"] == "done", events[-1]
    assert events[-1]["response"] == content
    assert web.wait(timeout=30) == 0
    session = stored_messages(redis_client, events[-1]["session_id"])
    assert len(session) == 2
    logs = web.logs()
    assert "Application shutdown complete" in logs


def test_a_draining_replica_says_so_and_serves_until_the_drain_ends(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    web = start_api(SHUTDOWN_DRAIN_SECONDS="2")
    port = int(web.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=web.url, timeout=10) as http:
        assert http.get("/health").status_code == 200
        web.terminate()
        health = poll_health(http)
        assert health.status_code == 503
        assert health.json()["status"] == "draining"
        # Still serving, on a new connection too, while a balancer takes it out of rotation.
        with httpx.Client(base_url=web.url, timeout=10) as fresh:
            answer = fresh.post("/chat", json={"message": "still here"}, headers=bearer(api_key))
        assert answer.status_code == 200, answer.text
        assert not refuses_connections(port)
    wait_for(lambda: refuses_connections(port), 10, "the port to close after the drain")
    assert web.wait(timeout=30) == 0
    assert "draining" in web.logs()


def poll_health(http: httpx.Client) -> httpx.Response:
    """`/health` once it no longer says ok (the signal takes a moment to arrive)."""
    response = http.get("/health")
    for _ in range(100):
        if response.status_code != 200:
            break
        response = http.get("/health")
    return response


def test_a_stream_past_the_grace_is_cut_and_its_text_saved_as_interrupted(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    content = " ".join(f"word{i}" for i in range(WORDS))
    # 30 words at 0.5 s each: the stream outlives the 1 s grace by far.
    standin.control.script(api_key, {"content": content, "chunk_delay": 0.5})
    web = start_api(SHUTDOWN_GRACE_SECONDS="1")
    events = []
    with (
        # The server cuts the stream: the client sees the connection end early.
        contextlib.suppress(httpx.TransportError),
        httpx.Client(base_url=web.url, timeout=30) as http,
        http.stream(
            "POST", "/chat", json={"message": "long", "stream": True}, headers=bearer(api_key)
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(msgspec.json.decode(line[6:]))
                if len(events) == 2:
                    web.terminate()

    assert web.wait(timeout=30) == 0
    assert 2 <= len(events) < WORDS
    assert all(event["type"] == "delta" for event in events)
    # The client never got the done event with its session id: the only session is this one.
    (key,) = redis_client.keys("chat:{*}:messages")  # type: ignore[misc]
    stored = stored_messages(redis_client, key.decode().split("{")[1].split("}")[0])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["interrupted"] is True
    sent = "".join(event["content"] for event in events)
    # Everything the client got is saved, and at most what was produced after it.
    assert stored[1]["content"].startswith(sent)
    assert content.startswith(stored[1]["content"])


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_the_worker_exits_0_on_sigterm(redis_url: str, standin: StandinServer, how: str) -> None:
    if how == "argument":
        worker = ProcfileProcess("worker", base_env(redis_url, standin))
    else:
        # The image's entry point without a command, told by PROCESS_ROLE.
        worker = ProcfileProcess("web", {**base_env(redis_url, standin), "PROCESS_ROLE": "worker"})
        worker.command = "chat-backend"
    worker.start()
    try:
        wait_for(lambda: "worker started" in worker.logs(), 30, "the worker to start")
        worker.terminate()
        code = worker.wait(timeout=30)
    finally:
        worker.close()

    assert code == 0


def test_several_processes_per_replica_stop_together_with_exit_0(
    start_api: Callable[..., WebProcess], api_key: str
) -> None:
    web = start_api(WEB_CONCURRENCY="2")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        assert http.post("/chat", json={"message": "hi"}, headers=bearer(api_key)).is_success
    web.terminate()

    assert web.wait(timeout=30) == 0
