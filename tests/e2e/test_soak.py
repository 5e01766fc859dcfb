"""A soak: sustained concurrent turns for minutes while Redis and OpenRouter fault now and then.

Afterwards every turn answered with success (a 200, or a stream's `done` event) is in Redis
exactly once and whole, nothing else is half there, the key is in no log line, and the API
process's memory has not grown. Runs with `pytest -m soak -s` (CI runs it); SOAK_SECONDS
sets its length.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from tests.conftest import bearer
from tests.e2e.test_redis_faults import DebuggableRedisServer
from tests.standin.control import StandinControl
from tests.support.redis_state import broken_turns, session_ids, stored_messages

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "150"))
CLIENTS = 8
TURNS_PER_SESSION = 8
# What OpenRouter does to about one call in four (the others succeed).
UPSTREAM_FAULTS: list[dict[str, Any]] = [
    {"status": 503},
    {"status": 502},
    {"status": 500},
    {"status": 429, "headers": {"Retry-After": "1"}},
    {"cut_after": 2},
    {"drop_after": 1},
    {"no_done": True},
    {"delay": 4},  # over UPSTREAM_TIMEOUT_SECONDS
    {"status": 200, "raw_body": "<html>oops</html>", "content_type": "text/html"},
    {"body_error": {"code": 502, "message": "Provider returned error"}},
]
# RSS may settle a little after warm-up (allocator arenas, caches); a leak per turn or per
# fault would add far more over thousands of turns.
RSS_GROWTH_LIMIT_MB = 25.0


class SoakRedis(DebuggableRedisServer):
    """Saves its data when stopped, so a restart loses nothing that was committed."""

    def __init__(self) -> None:
        super().__init__()
        self.persist = True


@dataclass
class Tally:
    """What the clients saw."""

    succeeded: list[tuple[str, str, str]] = field(default_factory=list)  # session, ask, answer
    sent: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, success: tuple[str, str, str] | None = None) -> None:
        with self.lock:
            self.statuses[outcome] += 1
            if success is not None:
                self.succeeded.append(success)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def stream_turn(http: httpx.Client, key: str, body: dict[str, Any]) -> tuple[str, str | None]:
    """A streamed turn: ('done', answer) or (what ended it, None)."""
    with http.stream("POST", "/chat", json={**body, "stream": True}, headers=bearer(key)) as r:
        if r.status_code != 200:
            r.read()
            return str(r.status_code), None
        last: dict[str, Any] = {}
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:])
    if last.get("type") == "done":
        return "done", str(last["response"])
    return f"event {last.get('error', {}).get('status', 'cut')}", None


def plain_turn(http: httpx.Client, key: str, body: dict[str, Any]) -> tuple[str, str | None]:
    response = http.post("/chat", json=body, headers=bearer(key))
    if response.status_code == 200:
        return "200", str(response.json()["response"])
    return str(response.status_code), None


def client_loop(
    base_url: str, standin: StandinServer, key: str, tally: Tally, until: float, seed: int
) -> None:
    rng = random.Random(seed)
    # A control client of its own: httpx clients are not shared between threads here.
    with (
        httpx.Client(base_url=base_url, timeout=30) as http,
        StandinControl(standin.root_url) as control,
    ):
        while time.monotonic() < until:
            session_id = f"soak-{secrets.token_hex(8)}"
            for turn in range(TURNS_PER_SESSION):
                if time.monotonic() >= until:
                    return
                if rng.random() < 0.25:
                    control.script(key, rng.choice(UPSTREAM_FAULTS))
                ask = f"turn {turn} of {session_id} ({secrets.token_hex(4)})"
                body = {"message": ask, "session_id": session_id}
                with tally.lock:
                    tally.sent.add(ask)
                try:
                    turn_call = stream_turn if rng.random() < 0.4 else plain_turn
                    outcome, answer = turn_call(http, key, body)
                except httpx.TransportError as exc:
                    outcome, answer = type(exc).__name__, None
                tally.record(outcome, (session_id, ask, answer) if answer is not None else None)


def fault_loop(server: SoakRedis, until: float, seed: int, log: list[str]) -> None:
    rng = random.Random(seed)
    while True:
        time.sleep(rng.uniform(6, 12))
        if time.monotonic() >= until - 5:
            return
        if rng.random() < 0.5:
            server.stop()
            time.sleep(rng.uniform(0.2, 1.5))
            server.start()
            log.append("restart")
        else:
            with redis.Redis(port=server.port, socket_timeout=10) as r:
                r.execute_command("DEBUG", "SLEEP", rng.uniform(0.5, 1.5))
            log.append("sleep")


@pytest.fixture
def soak_redis() -> Iterator[SoakRedis]:
    with SoakRedis() as server:
        yield server


def test_turns_under_sustained_load_and_faults_are_each_stored_once(
    soak_redis: SoakRedis, start_api: Callable[..., WebProcess], standin: StandinServer
) -> None:
    web = start_api(
        REDIS_URL=soak_redis.url,
        UPSTREAM_TIMEOUT_SECONDS="2",
        MAX_HISTORY_MESSAGES=str(4 * TURNS_PER_SESSION),
        LOG_LEVEL="DEBUG",
        # Every turn is admitted by the rate limit, which never binds here: its script runs
        # under the faults too.
        RATE_LIMIT_PER_MINUTE="100000000",
    )
    keys = [f"sk-or-v1-{secrets.token_hex(32)}" for _ in range(CLIENTS)]
    tally = Tally()
    faults: list[str] = []
    started = time.monotonic()
    until = started + SOAK_SECONDS
    threads = [
        threading.Thread(target=client_loop, args=(web.url, standin, key, tally, until, n))
        for n, key in enumerate(keys)
    ]
    threads.append(threading.Thread(target=fault_loop, args=(soak_redis, until, 99, faults)))
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float]] = []
    while any(thread.is_alive() for thread in threads):
        samples.append((time.monotonic() - started, rss_mb(web.pid)))
        time.sleep(1)
    for thread in threads:
        thread.join()

    store = redis.Redis(port=soak_redis.port)
    try:
        stored = {sid.decode(): stored_messages(store, sid) for sid in session_ids(store)}
        problems = broken_turns(store)
    finally:
        store.close()
    elapsed = time.monotonic() - started
    early = statistics.median(rss for at, rss in samples if 0.2 * elapsed <= at < 0.4 * elapsed)
    late = statistics.median(rss for at, rss in samples if at >= 0.8 * elapsed)
    print(
        f"\nsoak: {elapsed:.0f} s, {sum(tally.statuses.values())} turns "
        f"({len(tally.succeeded)} succeeded), outcomes {dict(tally.statuses)}, "
        f"Redis faults {Counter(faults)}, API RSS {early:.1f} MB -> {late:.1f} MB"
    )

    assert faults, "Redis never faulted"
    # Every fault has its status (503, 502, 504, 429); a 500 is an error no handler expected.
    assert not {"500", "event 500"} & tally.statuses.keys(), tally.statuses
    assert len(tally.succeeded) > 100, tally.statuses
    assert len(tally.succeeded) < sum(tally.statuses.values()), "nothing failed: no faults?"
    assert problems == []
    asked = Counter(
        (sid, m["content"]) for sid, ms in stored.items() for m in ms if m["role"] == "user"
    )
    for session_id, ask, answer in tally.succeeded:
        assert asked[(session_id, ask)] == 1, (session_id, ask)
        messages = stored[session_id]
        index = next(i for i, m in enumerate(messages) if m["content"] == ask)
        assert messages[index + 1]["content"] == answer
    # Nothing was stored that no client sent, and nothing twice.
    assert {ask for _, ask in asked} <= tally.sent
    assert max(asked.values()) == 1
    assert late - early < RSS_GROWTH_LIMIT_MB, f"RSS grew {early:.1f} -> {late:.1f} MB"
    logs = web.logs()
    assert all(key not in logs and key[9:] not in logs for key in keys)
