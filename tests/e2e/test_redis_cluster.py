"""The API on a real Redis Cluster: every script it runs touches one slot.

The behaviour tests of sessions, streaming, `/v1` and limits run on the cluster too (the
modules marked `stores`); this module watches what reaches the cluster's masters.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from app.store import keys
from tests.conftest import base_env, bearer
from tests.support.processes import ProcfileProcess
from tests.support.redis_state import layout_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import Store
    from tests.standin import StandinServer
    from tests.support.processes import WebProcess
    from tests.support.redis_cluster import ClusterNode, RedisClusterServer

pytestmark = pytest.mark.stores("cluster")

MODEL = "openai/gpt-4o-mini"


class Watch:
    """MONITOR on every master of the cluster, in threads: the EVALSHAs each one ran."""

    def __init__(self, masters: list[ClusterNode]) -> None:
        self._masters = masters
        self._stop = threading.Event()
        self.scripts: list[tuple[int, list[str]]] = []  # (port, keys)
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._watch, args=(node,), daemon=True) for node in masters
        ]
        self._ready = threading.Barrier(len(masters) + 1)

    def _watch(self, node: ClusterNode) -> None:
        with redis.Redis(port=node.port) as client, client.monitor() as monitor:
            self._ready.wait()
            for command in monitor.listen():
                if self._stop.is_set():
                    return
                words = str(command["command"]).split(" ")
                if words[0].upper() == "EVALSHA" and command["client_type"] != "lua":
                    count = int(words[2])
                    with self._lock:
                        self.scripts.append((node.port, words[3 : 3 + count]))

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for node in self._masters:  # one more command on each wakes its monitor up
            with redis.Redis(port=node.port) as client:
                client.ping()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def masters(
    store: Store, redis_cluster: tuple[RedisClusterServer, Any]
) -> Iterator[list[ClusterNode]]:
    cluster, _ = redis_cluster
    nodes = [node for node in cluster.running() if _role(node) == b"master"]
    assert len(nodes) == 3
    yield nodes


def _role(node: ClusterNode) -> bytes:
    with node.client() as client:
        role: bytes = client.execute_command("ROLE")[0]
        return role


def slot_of(client: Any, key: str) -> int:
    return int(client.cluster_keyslot(key))


def test_every_script_of_the_api_touches_one_slot(
    start_api: Callable[..., WebProcess],
    masters: list[ClusterNode],
    redis_client: Any,
    standin: StandinServer,
    api_key: str,
) -> None:
    """Turns of every kind, with limits and the checks of who calls on: each EVALSHA that
    reaches a master names keys of one slot, and that master holds the slot."""
    web = start_api(
        RATE_LIMIT_PER_MINUTE="100",
        TOKEN_LIMIT_PER_DAY="100000",
        AUTH_FAILURES_PER_MINUTE="50",
        REFUSED_KEY_SECONDS="60",
    )
    headers = bearer(api_key)
    with Watch(masters) as watch, httpx.Client(base_url=web.url, timeout=30) as http:
        first = http.post("/chat", json={"message": "hello", "model": MODEL}, headers=headers)
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
        again = {"message": "and again", "model": MODEL, "session_id": session_id}
        assert http.post("/chat", json=again, headers=headers).status_code == 200
        streamed = http.post("/chat", json={**again, "stream": True}, headers=headers)
        assert streamed.status_code == 200 and '"type":"done"' in streamed.text
        completion = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        answer = http.post("/v1/chat/completions", json=completion, headers=headers)
        assert answer.status_code == 200, answer.text
        assert http.get("/sessions", headers=headers).json()["total"] == 1
        assert http.delete(f"/sessions/{session_id}", headers=headers).status_code == 204
        refused = http.post(
            "/chat", json={"message": "x", "model": "no/such-model"}, headers=headers
        )
        assert refused.status_code == 400
        bad_key = http.post("/chat", json={"message": "x"}, headers={"Authorization": "Bearer"})
        assert bad_key.status_code == 401

    assert len(watch.scripts) >= 10, watch.scripts
    port_of = {node.port: node for node in masters}
    for port, script_keys in watch.scripts:
        slots = {slot_of(redis_client, key) for key in script_keys}
        assert len(slots) <= 1, (script_keys, slots)
        for key in script_keys:
            assert _holds(port_of[port], key), (port, key)
    touched = {key for _, script_keys in watch.scripts for key in script_keys}
    layout = layout_for(redis_client)
    assert layout.cluster
    owner_index = next(key for key in touched if key.endswith(":sessions") and "owner" in key)
    assert owner_index.startswith("chat:owner:{") and keys.PREFIX in owner_index
    assert any(key.startswith("chat:usage:recorded:{") for key in touched)


def _holds(node: ClusterNode, key: str) -> bool:
    """Whether `node` serves `key`'s slot (it answers a read of it without a MOVED)."""
    with node.client() as client:
        try:
            client.execute_command("EXISTS", key)
        except redis.ResponseError as exc:
            if str(exc).startswith("MOVED"):
                return False
            raise
    return True


def test_the_worker_says_it_needs_a_standalone_redis_and_stops(
    store: Store, standin: StandinServer
) -> None:
    """Its scripts are not single-slot yet: it refuses the cluster at its start, by name,
    rather than failing a script every second."""
    env = {**base_env(store, standin)}
    with ProcfileProcess("worker", env) as worker:
        deadline = time.monotonic() + 30
        while worker.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not worker.running()
        assert "does not run on a Redis Cluster yet" in worker.logs()
