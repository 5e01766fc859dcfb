"""REDIS_WAIT_REPLICAS: a turn answered 200 is on that many replicas, and survives the loss of
its master (a real failover of a real Redis Cluster)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, Store, base_env, bearer
from tests.support.processes import WebProcess
from tests.support.redis_cluster import RedisClusterServer
from tests.support.redis_server import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.standin import StandinServer

MODEL = "openai/gpt-4o-mini"


@pytest.fixture
def replicated_redis() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A standalone Redis and one replica of it, in sync."""
    with RedisServer() as primary, RedisServer() as replica:
        with redis.Redis(port=replica.port) as client:
            client.replicaof("127.0.0.1", primary.port)
            deadline = time.monotonic() + 20
            while client.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
        yield primary, replica


def test_a_turn_is_answered_once_its_replica_has_it(
    replicated_redis: tuple[RedisServer, RedisServer], standin: StandinServer, api_key: str
) -> None:
    primary, replica = replicated_redis
    env = {**base_env(primary.url, standin), "REDIS_WAIT_REPLICAS": "1"}
    with WebProcess(env, free_port()) as web, httpx.Client(base_url=web.url, timeout=30) as http:
        answer = http.post("/chat", json={"message": "kept twice"}, headers=bearer(api_key))
        assert answer.status_code == 200, answer.text
        session_id = answer.json()["session_id"]
    owner = owner_id(api_key, SESSION_SECRET.encode())
    with redis.Redis(port=replica.port) as client:
        # Answered only once the replica had it: it is there now, without waiting.
        assert client.llen(f"chat:{{{owner}:{session_id}}}:messages") == 2


def test_without_the_replicas_asked_for_a_turn_is_a_503_that_says_so(
    redis_url: str, standin: StandinServer, api_key: str
) -> None:
    env = {**base_env(redis_url, standin), "REDIS_WAIT_REPLICAS": "1"}
    with WebProcess(env, free_port()) as web, httpx.Client(base_url=web.url, timeout=30) as http:
        answer = http.post("/chat", json={"message": "no replica"}, headers=bearer(api_key))
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] == "storage_unavailable"
    assert "REDIS_WAIT_REPLICAS" in answer.json()["error"]["message"]


class Load:
    """Threads each continuing their own session as fast as the API answers, recording
    every turn's message and status."""

    def __init__(self, url: str, key: str, sessions: list[str]) -> None:
        self.url = url
        self.key = key
        self.sessions = sessions
        self.outcomes: list[tuple[float, str, str, int]] = []  # (at, session, message, status)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(sid,), daemon=True) for sid in sessions
        ]

    def _run(self, session_id: str) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                message = f"{session_id} turn {n}"
                body = {"message": message, "model": MODEL, "session_id": session_id}
                status = http.post("/chat", json=body, headers=bearer(self.key)).status_code
                with self._lock:
                    self.outcomes.append((time.monotonic(), session_id, message, status))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_a_master_lost_under_load_loses_no_answered_turn(
    standin: StandinServer, api_key: str
) -> None:
    """Turns on sessions spread over the three masters while one master is killed (SIGKILL):
    turns fail, with 503s, only from the loss until shortly after its replica's promotion
    (the cluster client drops every connection when it loses a node, in-flight calls on
    other masters included); every turn answered 200 is there afterwards; and the sessions
    of the lost master's slots are served again within seconds of the promotion."""
    owner = owner_id(api_key, SESSION_SECRET.encode())
    # Two replicas a master: once one is promoted, the other replicates it, and the turns
    # of its slots have a replica to wait for again.
    with RedisClusterServer(replicas=2) as cluster, RedisServer() as queue:
        store = Store(cluster.url, cluster=True, queue_url=queue.url)
        env = {
            **base_env(store, standin),
            "REDIS_WAIT_REPLICAS": "1",
            "RATE_LIMIT_PER_MINUTE": "0",
            "MAX_HISTORY_MESSAGES": "100000",  # every turn stays, to be found afterwards
        }
        sessions = [f"failover-{n}" for n in range(9)]
        meta = f"chat:{{{owner}:{sessions[0]}}}:meta"
        victim = cluster.master_of(meta)
        on_victim = {
            sid for sid in sessions if cluster.master_of(f"chat:{{{owner}:{sid}}}:meta") is victim
        }
        with WebProcess(env, free_port()) as web, Load(web.url, api_key, sessions) as load:
            time.sleep(2)
            cluster.kill(victim)
            killed_at = time.monotonic()
            cluster.wait_failover(meta, victim)
            promoted_at = time.monotonic()
            time.sleep(6)
            unhandled = [line for line in web.logs().splitlines() if "unhandled" in line]
        client: Any = redis.RedisCluster(host="127.0.0.1", port=cluster.running()[0].port)
        with client:
            stored = {
                sid: client.lrange(f"chat:{{{owner}:{sid}}}:messages", 0, -1) for sid in sessions
            }

    statuses = {status for *_, status in load.outcomes}
    assert statuses <= {200, 503}, (statuses, unhandled[:1])
    answered = [(sid, message) for _, sid, message, status in load.outcomes if status == 200]
    assert len(answered) > 50
    for sid, message in answered:
        assert any(f'"{message}"'.encode() in raw for raw in stored[sid]), (sid, message)
    failed = [(at, sid) for at, sid, _, status in load.outcomes if status != 200]
    assert {sid for _, sid in failed} & on_victim
    late = [(round(at - promoted_at, 2), sid) for at, sid in failed if at > promoted_at + 2]
    assert all(at >= killed_at for at, _ in failed) and not late, late
    served_again = [
        at for at, sid, _, status in load.outcomes
        if sid in on_victim and status == 200 and at > promoted_at
    ]  # fmt: skip
    assert served_again and served_again[0] - promoted_at < 5
