"""Replicas behind a real load balancer behave as one service.

Redis with compose's persistence, three web replicas and a worker started as the Procfile
says, HAProxy with the shipped configuration in front, all on loopback. Every request goes
through the balancer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import msgspec
import pytest
import redis

from app.store import keys
from tests.conftest import SESSION_SECRET, bearer
from tests.support.cluster import Cluster, compose_file, wait_for
from tests.support.redis_state import session_tag

SHARD = keys.STANDALONE.shards[0]  # a standalone Redis's only shard

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.standin import StandinServer

CLIENTS = 6
# The stand-in's answer time: long enough that a replica stopped under load has turns in flight.
UPSTREAM_DELAY = 0.05
MODEL = "openai/gpt-4o"


@pytest.fixture(scope="module")
def cluster(standin: StandinServer) -> Iterator[Cluster]:
    env = {
        "APP_ENV": "production",
        "SESSION_SECRET": SESSION_SECRET,
        "OPENROUTER_BASE_URL": standin.base_url,
        "LOG_FORMAT": "json",
        "UPSTREAM_TIMEOUT_SECONDS": "10",
        # Every turn of a load run stays in its session, so each can be found afterwards.
        "MAX_HISTORY_MESSAGES": "2000",
        "SHUTDOWN_GRACE_SECONDS": "10",
        # A load run outlasts a minute's allowance of its keys: these tests are about replicas.
        "RATE_LIMIT_PER_MINUTE": "0",
        # As compose.yaml has it: out of HAProxy's rotation before the port closes.
        "SHUTDOWN_DRAIN_SECONDS": compose_file()["services"]["api"]["environment"][
            "SHUTDOWN_DRAIN_SECONDS"
        ],
        # HAProxy is the peer; the client address in the logs is the one it forwards.
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    with Cluster(env) as running:
        yield running


@pytest.fixture
def store(cluster: Cluster) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cluster.redis.url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def every_replica_up(cluster: Cluster) -> Iterator[None]:
    """Each test starts, and leaves, with every process running and in rotation."""
    yield
    for name, web in cluster.webs.items():
        if not web.running():
            cluster.restart(name)
    if not cluster.worker.running():
        cluster.restart_worker()
    cluster.wait_all_in_rotation()


class Outcome(msgspec.Struct):
    session_id: str
    message: str
    status: int  # 0: the connection failed
    retry_after: str | None = None
    error_status: int | None = None  # `error.status` of an error body


def error_status(response: httpx.Response) -> int | None:
    try:
        status: int = response.json()["error"]["status"]
    except (ValueError, KeyError, TypeError):
        return None
    return status


class Load:
    """CLIENTS clients, each continuing its own session through the balancer until stopped."""

    def __init__(self, url: str, standin: StandinServer) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._sessions = [f"load-{uuid.uuid4().hex[:12]}" for _ in range(CLIENTS)]
        self._keys = ["sk-or-v1-" + uuid.uuid4().hex * 2 for _ in range(CLIENTS)]
        for key in self._keys:
            standin.control.script(key, *([{"delay": UPSTREAM_DELAY}] * 2000))
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _client(self, index: int) -> None:
        session_id, key = self._sessions[index], self._keys[index]
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            turn = 0
            while not self._stop.is_set():
                turn += 1
                message = f"{session_id} turn {turn}"
                try:
                    response = await http.post(
                        "/chat",
                        json={"message": message, "session_id": session_id, "model": MODEL},
                        headers=bearer(key),
                    )
                except httpx.TransportError:
                    self.outcomes.append(Outcome(session_id, message, 0))
                    await asyncio.sleep(0.05)
                    continue
                status = response.status_code
                outcome = Outcome(session_id, message, status)
                if status != 200:
                    outcome.retry_after = response.headers.get("retry-after")
                    outcome.error_status = error_status(response)
                self.outcomes.append(outcome)
                if status != 200:
                    await asyncio.sleep(0.05)

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(CLIENTS)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the load did not stop"

    def answered(self) -> int:
        return sum(outcome.status == 200 for outcome in self.outcomes)

    def wait_answered(self, more: int, timeout: float = 60) -> None:
        target = self.answered() + more
        wait_for(lambda: self.answered() >= target, timeout, f"{more} more answered turns")


def stored_user_messages(store: redis.Redis, session_id: str) -> list[str]:
    raw = store.lrange(f"{session_tag(store, session_id)}:messages", 0, -1)
    messages = [msgspec.json.decode(item) for item in raw]  # type: ignore[union-attr]
    return [message["content"] for message in messages if message["role"] == "user"]


def assert_every_answered_turn_is_stored(store: redis.Redis, load: Load) -> None:
    answered: dict[str, list[str]] = {}
    for outcome in load.outcomes:
        if outcome.status == 200:
            answered.setdefault(outcome.session_id, []).append(outcome.message)
    assert answered
    for session_id, messages in answered.items():
        stored = set(stored_user_messages(store, session_id))
        lost = [message for message in messages if message not in stored]
        assert not lost, f"answered 200 but not in Redis: {lost}"


def test_a_conversation_lands_on_every_replica_and_keeps_its_context(
    cluster: Cluster, store: redis.Redis, api_key: str
) -> None:
    served_by = Counter[str]()
    session_id = None
    turns = 12
    with httpx.Client(base_url=cluster.balancer.url, timeout=30) as http:
        for turn in range(1, turns + 1):
            response = http.post(
                "/chat",
                json={"message": f"question {turn}", "session_id": session_id},
                headers=bearer(api_key),
            )
            assert response.status_code == 200, response.text
            served_by[response.headers["x-served-by"]] += 1
            session_id = response.json()["session_id"]
            # The stand-in echoes how many user messages it was sent: the whole history.
            assert response.json()["response"] == f"Echo {turn}: question {turn}"
        listing = http.get("/sessions", headers=bearer(api_key)).json()
        detail = http.get(f"/sessions/{session_id}", headers=bearer(api_key))
        deleted = http.delete(f"/sessions/{session_id}", headers=bearer(api_key))
        gone = http.get(f"/sessions/{session_id}", headers=bearer(api_key))
        models = [http.get("/models") for _ in range(len(cluster.webs))]

    assert set(served_by) == set(cluster.webs), served_by
    assert [s["session_id"] for s in listing["sessions"]] == [session_id]
    assert len(detail.json()["messages"]) == 2 * turns
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert store.exists(f"{session_tag(store, str(session_id))}:messages") == 0
    # One shared copy of the model list, whichever replica answers.
    assert {response.headers["x-served-by"] for response in models} == set(cluster.webs)
    assert len({response.headers["etag"] for response in models}) == 1


def test_client_addresses_in_the_logs_come_from_the_balancer(cluster: Cluster) -> None:
    """The client connects from 127.0.0.2; HAProxy (127.0.0.1, trusted) forwards that."""
    forged = {"X-Forwarded-For": "198.51.100.7"}
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as http:
        for _ in range(len(cluster.webs)):
            http.get(f"{cluster.balancer.url}/health", headers={"X-Request-ID": "via-lb"})
            http.get(f"{cluster.balancer.url}/health", headers={"X-Request-ID": "forged", **forged})
        # Straight to a replica: the peer is not trusted, so its header is not believed.
        direct = next(iter(cluster.webs.values()))
        http.get(f"{direct.url}/health", headers={"X-Request-ID": "direct", **forged})

    def logs() -> list[str]:
        return "".join(web.logs() for web in cluster.webs.values()).splitlines()

    def lines_of(request_id: str) -> list[str]:
        return [line for line in logs() if f'"request_id":"{request_id}"' in line]

    # A request's log line is written once its response has been sent.
    wait_for(lambda: len(lines_of("forged")) == len(cluster.webs), 30, "the log lines")
    wait_for(lambda: bool(lines_of("direct")), 30, "the log line")
    for request_id in ("via-lb", "forged", "direct"):
        lines = lines_of(request_id)
        assert all('"client":"127.0.0.2"' in line for line in lines), lines
    assert not [line for line in logs() if "198.51.100.7" in line]


def test_behind_the_shipped_balancer_a_client_cannot_name_its_own_address(
    standin: StandinServer,
) -> None:
    """As compose runs it, the replicas believe every peer's X-Forwarded-For (`*`: HAProxy is
    the only one), so HAProxy must not pass on the client's own: failed authentications are
    counted by the address, and a forged one would escape the count."""
    trusted = compose_file()["services"]["api"]["environment"]["FORWARDED_ALLOW_IPS"]
    env = {
        "APP_ENV": "production",
        "SESSION_SECRET": SESSION_SECRET,
        "OPENROUTER_BASE_URL": standin.base_url,
        "LOG_FORMAT": "json",
        "FORWARDED_ALLOW_IPS": trusted,
        "AUTH_FAILURES_PER_MINUTE": "2",
    }
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with Cluster(env, replicas=1) as cluster, httpx.Client(transport=transport) as http:
        statuses = [
            http.get(
                f"{cluster.balancer.url}/sessions",
                headers={"X-Forwarded-For": f"198.51.100.{n}", "X-Request-ID": f"forged-{n}"},
            ).status_code
            for n in range(3)
        ]
        (web,) = cluster.webs.values()
        wait_for(lambda: '"request_id":"forged-2"' in web.logs(), 30, "the log line")
        logs = web.logs()

    assert statuses == [401, 401, 429]
    assert '"client":"127.0.0.2"' in logs
    assert "198.51.100." not in logs


def test_metrics_are_served_by_each_replica_not_through_the_balancer(cluster: Cluster) -> None:
    through = httpx.get(f"{cluster.balancer.url}/metrics", timeout=10)
    direct = [httpx.get(f"{web.url}/metrics", timeout=10) for web in cluster.webs.values()]

    assert through.status_code == 404
    assert all("chat_http_requests_total" in response.text for response in direct)


def test_sigterm_under_load_fails_no_request(
    cluster: Cluster, store: redis.Redis, standin: StandinServer
) -> None:
    with Load(cluster.balancer.url, standin) as load:
        load.wait_answered(60)
        web = cluster.webs["web2"]
        code = web.stop(timeout=30)
        load.wait_answered(60)

    assert code == 0, web.logs()[-2000:]
    statuses = Counter(outcome.status for outcome in load.outcomes)
    assert set(statuses) == {200}, statuses
    assert "Application shutdown complete" in web.logs()
    assert_every_answered_turn_is_stored(store, load)


def test_sigkill_fails_only_the_turns_in_flight_and_loses_no_answered_turn(
    cluster: Cluster, store: redis.Redis, standin: StandinServer
) -> None:
    with Load(cluster.balancer.url, standin) as load:
        load.wait_answered(60)
        cluster.kill("web3")
        load.wait_answered(100)

    statuses = Counter(outcome.status for outcome in load.outcomes)
    failed = sum(count for status, count in statuses.items() if status != 200)
    # Each client has at most one turn in flight, on one replica.
    assert failed <= CLIENTS, statuses
    # 502 from HAProxy, or the connection closed, so the client may retry on its own.
    assert set(statuses) <= {200, 0, 502}, statuses
    assert_every_answered_turn_is_stored(store, load)


def test_a_redis_restart_gives_503s_then_service_resumes_losing_nothing(
    cluster: Cluster, store: redis.Redis, standin: StandinServer
) -> None:
    with Load(cluster.balancer.url, standin) as load:
        load.wait_answered(60)
        cluster.redis.stop()
        wait_for(lambda: any(o.status == 503 for o in load.outcomes), 30, "a 503")
        time.sleep(1)
        cluster.redis.start()
        load.wait_answered(60)

    statuses = Counter(outcome.status for outcome in load.outcomes)
    assert set(statuses) == {200, 503}, statuses
    # The API's error shape, whether a replica or HAProxy (every replica out) answered.
    unavailable = [outcome for outcome in load.outcomes if outcome.status == 503]
    assert all(outcome.error_status == 503 for outcome in unavailable), unavailable[:3]
    assert all(outcome.retry_after == "1" for outcome in unavailable), unavailable[:3]
    # Every client got answers again after the outage.
    last = {outcome.session_id: outcome.status for outcome in load.outcomes}
    assert set(last.values()) == {200}, last
    assert_every_answered_turn_is_stored(store, load)


def test_a_killed_worker_catches_up_counting_each_turn_once(
    cluster: Cluster, store: redis.Redis, standin: StandinServer
) -> None:
    wait_for(
        lambda: store.llen(SHARD.usage_inbox) == 0,
        60,
        "earlier usage to be drained",
    )
    day_before = metrics_requests(store, MODEL)
    with Load(cluster.balancer.url, standin) as load:
        load.wait_answered(60)
        cluster.kill_worker()
        load.wait_answered(60)
    cluster.restart_worker()

    assert {outcome.status for outcome in load.outcomes} == {200}
    answered = load.answered()
    wait_for(
        lambda: store.llen(SHARD.usage_inbox) == 0,
        60,
        "the worker to drain the inbox",
    )
    assert metrics_requests(store, MODEL) - day_before == answered
    for session_id in {outcome.session_id for outcome in load.outcomes}:
        usage = store.hget(f"{session_tag(store, session_id)}:usage", "turns")
        assert int(usage or 0) == len(stored_user_messages(store, session_id))  # type: ignore[arg-type]


def metrics_requests(store: redis.Redis, model: str) -> int:
    total = 0
    for key in store.scan_iter(match=SHARD.daily_metrics("*")):
        total += int(store.hget(key, f"{model}|requests") or 0)  # type: ignore[arg-type]
    return total
