"""The arq worker as the Procfile starts it: usage metrics, counted once, health, retries."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import pytest
import redis
from arq import create_pool
from arq.connections import RedisSettings

from app.store.sessions import commit_turn_script
from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.support.processes import ProcfileProcess
from tests.support.redis_server import RedisServer
from tests.support.redis_state import (
    dead_count,
    dead_events,
    inbox_events,
    layout_for,
    pending_events,
    session_tag,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Protocol

    from tests.conftest import Store
    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

    class StartWorker(Protocol):
        def __call__(self, **env: str) -> ProcfileProcess: ...


T = TypeVar("T")

pytestmark = pytest.mark.stores("standalone", "cluster")

HEARTBEAT = "chat:worker:heartbeat"
DEFAULT_MODEL = "anthropic/claude-sonnet-4.5"
OTHER_MODEL = "openai/gpt-chat-latest"
THIRD_MODEL = "x-ai/grok-4.3"
# Usage metrics are visible within a couple of seconds of the turn (the drain runs each second).
VISIBLE_WITHIN = 5.0
DAY_MS = 86_400_000


# ---- helpers shared with test_pruning and test_admin ---------------------------------------


def wait_for(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last value: {value!r})")
        time.sleep(interval)


def log_entries(process: ProcfileProcess) -> list[dict[str, Any]]:
    """The JSON log lines of a process (arq's own start-up lines are plain text)."""
    entries: list[dict[str, Any]] = []
    for line in process.logs().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def logged(process: ProcfileProcess, message: str) -> list[dict[str, Any]]:
    return [entry for entry in log_entries(process) if entry.get("message") == message]


def log_time(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["time"])


def wait_started(worker: ProcfileProcess, timeout: float = 20.0) -> None:
    def started() -> bool:
        if not worker.running():
            raise AssertionError(f"the worker exited at start:\n{worker.logs()}")
        return bool(logged(worker, "worker started"))

    wait_for(started, timeout=timeout, what="the worker logs `worker started`")


class WorkerPool:
    """Workers started from the Procfile's `worker:` entry, all stopped on close."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._started: list[ProcfileProcess] = []

    def start(self, **env: str) -> ProcfileProcess:
        worker = ProcfileProcess("worker", {**self._env, **env})
        self._started.append(worker)
        worker.start()
        wait_started(worker)
        return worker

    def close(self) -> None:
        for worker in self._started:
            worker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def chat(http: httpx.Client, key: str, message: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/chat", json={"message": message, **fields}, headers=bearer(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def session_usage(http: httpx.Client, key: str, session_id: str) -> dict[str, Any]:
    response = http.get(f"/sessions/{session_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    usage: dict[str, Any] = response.json()["usage"]
    return usage


def session_keys(client: redis.Redis, session_id: str) -> list[bytes]:
    """Every key of one session (they share the hash tag `{<owner>:<id>}`; ids are unique in a
    test)."""
    return sorted(client.scan_iter(match=f"chat:{{*:{session_id}}}:*"))


def metric_totals(client: redis.Redis) -> dict[str, dict[str, float]]:
    """Every `chat:metrics:<day>` hash folded into {model: {counter: value}}."""
    totals: dict[str, dict[str, float]] = {}
    for key in client.scan_iter(match="chat:metrics:*"):
        fields: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
        for field, value in fields.items():
            model, _, counter = field.decode().rpartition("|")
            per_model = totals.setdefault(model, {})
            per_model[counter] = per_model.get(counter, 0.0) + float(value)
    return totals


def expected_usage(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-session usage as the turns' answers reported it."""
    return {
        "turns": len(replies),
        "prompt_tokens": sum(r["usage"]["prompt_tokens"] for r in replies),
        "completion_tokens": sum(r["usage"]["completion_tokens"] for r in replies),
        "total_tokens": sum(r["usage"]["total_tokens"] for r in replies),
        "cost": pytest.approx(sum(r["usage"]["cost"] for r in replies), rel=1e-9),
        "models": dict(Counter(r["model_used"] for r in replies)),
    }


def counted(usage: dict[str, Any]) -> dict[str, Any]:
    return {name: usage[name] for name in ("turns", "prompt_tokens", "completion_tokens",
                                           "total_tokens", "cost", "models")}  # fmt: skip


def heartbeat(client: redis.Redis) -> float:
    """The last beat's unix time, 0 without one."""
    beat: bytes | None = client.get(HEARTBEAT)  # type: ignore[assignment]
    return float(beat or 0)


def owner_of(client: redis.Redis, session_id: str) -> str:
    """The owner id stored with a session."""
    owner: bytes | None = client.hget(f"{session_tag(client, session_id)}:meta", "owner")  # type: ignore[assignment]
    assert owner is not None, f"session {session_id} has no meta"
    return owner.decode()


def members(client: redis.Redis, key: str) -> list[str]:
    """A sorted set's members, lowest score first."""
    raw: list[bytes] = client.zrange(key, 0, -1)  # type: ignore[assignment]
    return [member.decode() for member in raw]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def start_worker(store: Store, standin: StandinServer) -> Iterator[StartWorker]:
    """Start workers with the API's settings plus the test's own; all stopped afterwards."""
    with WorkerPool(base_env(store, standin)) as pool:
        yield pool.start


# ---- per-session usage -----------------------------------------------------------------------


def test_usage_appears_per_session_and_in_the_listing(
    client: httpx.Client, api_key: str, standin: StandinServer, start_worker: StartWorker
) -> None:
    start_worker()
    # The third turn waits upstream, so its latency is known to be the largest.
    standin.control.script(api_key, {}, {}, {"delay": 0.4})
    replies: list[dict[str, Any]] = []
    walls: list[float] = []
    for message, model in (("first words", None), ("second", OTHER_MODEL), ("third", OTHER_MODEL)):
        started = time.perf_counter()
        extra = {"model": model} if model else {}
        session = {"session_id": replies[0]["session_id"]} if replies else {}
        replies.append(chat(client, api_key, message, **extra, **session))
        walls.append((time.perf_counter() - started) * 1000)
    session_id = replies[0]["session_id"]
    other = chat(client, api_key, "another session", model=THIRD_MODEL)
    last_turn_at = time.monotonic()

    usage = wait_for(
        lambda: (u := session_usage(client, api_key, session_id))["turns"] == 3 and u,
        timeout=VISIBLE_WITHIN,
        what="the session's usage counts its three turns",
    )
    print(f"usage visible {time.monotonic() - last_turn_at:.2f} s after the last turn")

    assert counted(usage) == expected_usage(replies)
    assert usage["models"] == {DEFAULT_MODEL: 1, OTHER_MODEL: 2}
    # Latency per turn is not on the wire: bound it by what the client waited, and by the delay.
    assert 400 <= usage["last_latency_ms"] <= walls[2]
    earlier = usage["avg_latency_ms"] * 3 - usage["last_latency_ms"]
    assert 0 < earlier <= walls[0] + walls[1] + 0.3
    first_at, last_at = parse_time(replies[0]["timestamp"]), parse_time(replies[2]["timestamp"])
    assert abs(parse_time(usage["first_activity"]) - first_at) <= timedelta(milliseconds=1)
    assert abs(parse_time(usage["last_activity"]) - last_at) <= timedelta(milliseconds=1)

    # The listing carries the same totals for every session of the key.
    wait_for(
        lambda: session_usage(client, api_key, other["session_id"])["turns"] == 1,
        timeout=VISIBLE_WITHIN,
        what="the second session's usage",
    )
    page = client.get("/sessions", headers=bearer(api_key)).json()
    listed = {s["session_id"]: s["usage"] for s in page["sessions"]}
    assert counted(listed[session_id]) == expected_usage(replies)
    assert counted(listed[other["session_id"]]) == expected_usage([other])
    assert listed[session_id]["last_activity"] == usage["last_activity"]


# ---- counted once ----------------------------------------------------------------------------


def test_two_workers_count_every_turn_exactly_once(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    start_worker()
    start_worker()
    sessions, turns_each = 10, 5

    def converse(index: int) -> list[dict[str, Any]]:
        with httpx.Client(base_url=client.base_url, timeout=30) as http:
            replies = [chat(http, api_key, f"conversation {index} turn 0")]
            session = {"session_id": replies[0]["session_id"]}
            for turn in range(1, turns_each):
                replies.append(chat(http, api_key, f"conversation {index} turn {turn}", **session))
            return replies

    with ThreadPoolExecutor(max_workers=sessions) as pool:
        conversations = list(pool.map(converse, range(sessions)))
    replies = [reply for conversation in conversations for reply in conversation]
    assert len(replies) == sessions * turns_each

    wait_for(
        lambda: (
            not inbox_events(redis_client)
            and not pending_events(redis_client)
            and all(
                session_usage(client, api_key, c[0]["session_id"])["turns"] >= turns_each
                for c in conversations
            )
        ),
        timeout=VISIBLE_WITHIN,
        what="every turn applied",
    )
    for conversation in conversations:
        usage = session_usage(client, api_key, conversation[0]["session_id"])
        assert counted(usage) == expected_usage(conversation)
    totals = metric_totals(redis_client)
    by_model = Counter(r["model_used"] for r in replies)
    assert {model: int(counters["requests"]) for model, counters in totals.items()} == by_model
    assert sum(c["total_tokens"] for c in totals.values()) == sum(
        r["usage"]["total_tokens"] for r in replies
    )


async def _run_drains(
    queue_url: str, job_ids: list[str], before_start: Callable[[], Any]
) -> list[Any]:
    """Enqueue the cron's own function by hand under fresh job ids, and wait for their results."""
    pool = await create_pool(RedisSettings.from_dsn(queue_url))
    try:
        jobs = [await pool.enqueue_job("cron:drain_usage", _job_id=job_id) for job_id in job_ids]
        before_start()
        return [await job.result(timeout=20, poll_delay=0.05) for job in jobs if job is not None]
    finally:
        await pool.aclose()


def test_drain_delivered_again_counts_nothing_twice(
    client: httpx.Client,
    api_key: str,
    redis_client: redis.Redis,
    store: Store,
    start_worker: StartWorker,
) -> None:
    # Turns while no worker runs: their events wait in the inbox.
    first = chat(client, api_key, "one")
    replies = [first] + [
        chat(client, api_key, f"turn {n}", session_id=first["session_id"]) for n in range(2, 5)
    ]
    assert len(inbox_events(redis_client)) == len(replies)

    # Three extra deliveries of the drain race the worker's own start-up and per-second runs.
    ids = [f"again-{uuid.uuid4().hex}" for _ in range(3)]
    applied = asyncio.run(_run_drains(store.queue_url, ids, start_worker))
    assert len(applied) == 3
    assert sum(applied) <= len(replies)
    wait_for(
        lambda: session_usage(client, api_key, first["session_id"])["turns"] >= len(replies),
        timeout=VISIBLE_WITHIN,
        what="the usage of the four turns",
    )
    assert counted(session_usage(client, api_key, first["session_id"])) == expected_usage(replies)

    # Delivered once more after everything was applied: nothing is left to count.
    again = asyncio.run(_run_drains(store.queue_url, [f"again-{uuid.uuid4().hex}"], lambda: None))
    assert again == [0]
    assert counted(session_usage(client, api_key, first["session_id"])) == expected_usage(replies)
    assert int(metric_totals(redis_client)[DEFAULT_MODEL]["requests"]) == len(replies)


# commit_turn.lua is a standalone Redis's commit (a cluster's: tests/e2e/test_redis_cluster.py).
@pytest.mark.stores("standalone")
def test_retried_commit_adds_one_message_pair_and_one_usage_event(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    commit = redis_client.register_script(commit_turn_script())
    owner = owner_id(api_key, SESSION_SECRET.encode())
    session_id, turn_id = uuid.uuid4().hex, uuid.uuid4().hex
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    stamp = now.isoformat().replace("+00:00", "Z")
    tag = f"chat:{{{owner}:{session_id}}}"
    event = {"at": now_ms, "day": now.strftime("%Y-%m-%d"), "model": DEFAULT_MODEL,
             "session_id": f"{owner}:{session_id}", "prompt_tokens": 3, "completion_tokens": 5,
             "total_tokens": 8, "cost": 0.25, "latency_ms": 12.5}  # fmt: skip
    keys = [f"{tag}:meta", f"{tag}:messages", f"{tag}:turns", f"{tag}:usage", "chat:sessions",
            f"chat:owner:{owner}:sessions", "chat:usage:inbox", "chat:owners",
            f"chat:limit:{{{owner}}}", f"chat:limit:{{{owner}}}:holds"]  # fmt: skip
    args: list[str | int] = [session_id, owner, turn_id, now_ms, 3_600_000, 50,
            DEFAULT_MODEL, "hi", "", json.dumps(event), "", "",
            json.dumps({"role": "user", "content": "hi", "timestamp": stamp}),
            json.dumps({"role": "assistant", "content": "hello", "timestamp": stamp,
                        "model": DEFAULT_MODEL})]  # fmt: skip

    assert commit(keys=keys, args=args) == [1, 2, -1, -1]
    # The same turn id again, as a retried call would send it.
    assert commit(keys=keys, args=args) == [2, 2, -1, -1]
    assert redis_client.llen(f"{tag}:messages") == 2
    assert len(inbox_events(redis_client)) == 1

    start_worker()
    usage = wait_for(
        lambda: (u := session_usage(client, api_key, session_id))["turns"] and u,
        timeout=VISIBLE_WITHIN,
        what="the committed turn's usage",
    )
    time.sleep(1.2)  # one more drain tick: a second event would show up now
    usage = session_usage(client, api_key, session_id)
    assert usage["turns"] == 1
    assert usage["total_tokens"] == event["total_tokens"]
    assert usage["cost"] == pytest.approx(event["cost"])


# ---- global metrics --------------------------------------------------------------------------


def test_daily_metrics_per_model_with_errors_by_status(
    api_key: str,
    redis_client: redis.Redis,
    standin: StandinServer,
    start_api: Callable[..., WebProcess],
    start_worker: StartWorker,
) -> None:
    token = "admin-" + uuid.uuid4().hex
    web = start_api(ADMIN_TOKEN=token)
    retention_days = 3
    start_worker(METRICS_RETENTION_DAYS=str(retention_days))
    standin.control.script(api_key, {}, {}, {"status": 429}, {"status": 500})
    with httpx.Client(base_url=web.url, timeout=30) as http:
        ok_default = chat(http, api_key, "hello", model=DEFAULT_MODEL)
        ok_other = chat(http, api_key, "hello again", model=OTHER_MODEL)
        limited = http.post(
            "/chat", json={"message": "x", "model": DEFAULT_MODEL}, headers=bearer(api_key)
        )
        failed = http.post(
            "/chat", json={"message": "y", "model": OTHER_MODEL}, headers=bearer(api_key)
        )
        assert (limited.status_code, failed.status_code) == (429, 502)

        def stats() -> dict[str, Any]:
            response = http.get("/admin/stats?days=2", headers=bearer(token))
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        body = wait_for(
            lambda: (
                (s := stats())["usage_backlog"] == 0
                and sum(d["totals"]["requests"] for d in s["days"]) == 4
                and s
            ),
            timeout=VISIBLE_WITHIN,
            what="four calls in /admin/stats",
        )

    # Summed over the days returned, so a turn at midnight UTC still adds up.
    models: dict[str, Counter[str]] = {}
    for day in body["days"]:
        for model, calls in day["models"].items():
            per_model = models.setdefault(model, Counter())
            for counter in ("requests", "errors", "prompt_tokens", "total_tokens"):
                per_model[counter] += calls[counter]
            per_model["cost_nano"] += round(calls["cost"] * 1e9)
            for status, count in calls["errors_by_status"].items():
                per_model[f"errors:{status}"] += count
    for ok, status in ((ok_default, "429"), (ok_other, "500")):
        assert models[ok["model_used"]] == Counter(
            {
                "requests": 2,
                "errors": 1,
                f"errors:{status}": 1,
                "prompt_tokens": ok["usage"]["prompt_tokens"],
                "total_tokens": ok["usage"]["total_tokens"],
                "cost_nano": round(ok["usage"]["cost"] * 1e9),
            }
        )

    # The same numbers in the hashes an operator reads, kept RETENTION days past their day.
    totals = metric_totals(redis_client)
    assert totals[DEFAULT_MODEL]["errors:429"] == 1
    assert totals[OTHER_MODEL]["errors:500"] == 1
    assert totals[DEFAULT_MODEL]["requests"] == totals[OTHER_MODEL]["requests"] == 2
    metric_keys = list(redis_client.scan_iter(match="chat:metrics:*"))
    assert metric_keys
    for key in metric_keys:
        # `chat:metrics:<day>`, and on a cluster the shard's suffix after it.
        name = re.search(r"\d{4}-\d{2}-\d{2}", key.decode())
        assert name is not None, key
        day = datetime.strptime(name.group(), "%Y-%m-%d").replace(tzinfo=UTC)
        end_of_day_ms = int((day + timedelta(days=1)).timestamp() * 1000)
        assert redis_client.pexpiretime(key) == end_of_day_ms + retention_days * DAY_MS


def metric_fields(client: redis.Redis) -> set[str]:
    """The names of every field of every `chat:metrics:<day>` hash."""
    return {
        field.decode()
        for key in client.scan_iter(match="chat:metrics:*")
        for field in client.hkeys(key)  # type: ignore[union-attr]
    }


def wait_calls_counted(client: redis.Redis, calls: int) -> None:
    def counted() -> bool:
        return sum(c.get("requests", 0) for c in metric_totals(client).values()) == calls

    wait_for(counted, timeout=VISIBLE_WITHIN, what=f"{calls} calls in the day's metrics")


def test_made_up_model_names_are_counted_under_one_label(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    start_worker()
    made_up = [f"vendor{n}/invented-{uuid.uuid4().hex[:8]}" for n in range(40)]
    for name in made_up:
        response = client.post(
            "/chat", json={"message": "hi", "model": name}, headers=bearer(api_key)
        )
        # OpenRouter (the stand-in, as strict) lists no such model.
        assert response.status_code == 400, response.text
    listed = chat(client, api_key, "a model the catalogue lists", model=OTHER_MODEL)
    wait_calls_counted(redis_client, 41)

    fields = metric_fields(redis_client)
    # 40 names once made 280 fields (7 each, kept METRICS_RETENTION_DAYS): now one label's.
    assert {field.rpartition("|")[0] for field in fields} == {"other", OTHER_MODEL}
    assert len([field for field in fields if field.startswith("other|")]) <= 7
    totals = metric_totals(redis_client)
    assert totals["other"]["requests"] == totals["other"]["errors:400"] == 40
    # A model the catalogue lists keeps its own label.
    assert totals[OTHER_MODEL]["requests"] == 1
    assert totals[OTHER_MODEL]["total_tokens"] == listed["usage"]["total_tokens"]


def test_an_answer_or_status_beyond_the_catalogue_and_our_statuses_is_other(
    client: httpx.Client,
    api_key: str,
    redis_client: redis.Redis,
    standin: StandinServer,
    start_worker: StartWorker,
) -> None:
    start_worker()
    # An answer naming a model the catalogue lacks; statuses of ours and not.
    standin.control.script(
        api_key, {"model": "vendor/unlisted-variant"}, {"status": 418}, {"status": 429}
    )
    answered = chat(client, api_key, "who answers?", model=OTHER_MODEL)
    teapot = client.post(
        "/chat", json={"message": "x", "model": OTHER_MODEL}, headers=bearer(api_key)
    )
    limited = client.post(
        "/chat", json={"message": "y", "model": OTHER_MODEL}, headers=bearer(api_key)
    )
    assert (teapot.status_code, limited.status_code) == (502, 429)
    wait_calls_counted(redis_client, 3)

    # The answer still says what answered; the metrics count it under `other`.
    assert answered["model_used"] == "vendor/unlisted-variant"
    totals = metric_totals(redis_client)
    assert set(totals) == {"other", OTHER_MODEL}
    assert totals["other"]["requests"] == 1
    assert totals[OTHER_MODEL]["errors:other"] == totals[OTHER_MODEL]["errors:429"] == 1
    assert "errors:418" not in totals[OTHER_MODEL]
    session = session_usage(client, api_key, answered["session_id"])
    assert session["models"] == {"other": 1}


# ---- health of the worker --------------------------------------------------------------------


def test_health_reports_worker_absent_ok_and_stale(
    client: httpx.Client, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    def health() -> dict[str, Any]:
        response = client.get("/health")
        # The worker's state never fails readiness.
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert health()["worker"] == "absent"
    worker = start_worker()
    wait_for(lambda: health()["worker"] == "ok", timeout=5, what="worker ok")
    worker.stop()
    # A beat a minute old, as a worker that died a minute ago leaves it.
    redis_client.set(HEARTBEAT, f"{time.time() - 60:.3f}", ex=120)
    assert health()["worker"] == "stale"
    redis_client.delete(HEARTBEAT)
    assert health()["worker"] == "absent"


def test_worker_beats_every_few_seconds(
    redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    start_worker()
    first = heartbeat(redis_client)
    assert abs(first - time.time()) < 15
    wait_for(
        lambda: heartbeat(redis_client) > first,
        timeout=8,
        what="a later heartbeat",
        interval=0.2,
    )


# ---- failures --------------------------------------------------------------------------------


# Each fails the drain's checks for a reason of its own; a bad figure once jammed the worker.
POISON: list[tuple[bytes | str, str]] = [
    (b"not json at all", "not JSON"),
    (json.dumps({"model": 7}), "model: not a string"),
    (json.dumps([1, 2]), "model: not a string"),
    (
        '{"model": "m", "day": "2026-12-03", "at": 1, "prompt_tokens": 18446744073709551616}',
        "prompt_tokens: not a count of tokens",
    ),
    (
        '{"model": "m", "day": "2026-12-03", "at": 1, "completion_tokens": -4}',
        "completion_tokens: not a count of tokens",
    ),
    (
        '{"model": "m", "day": "2026-12-03", "at": 1, "total_tokens": 1.5}',
        "total_tokens: not a count of tokens",
    ),
    ('{"model": "m", "day": "2026-12-03", "at": 1, "cost": 1e400}', "cost: not an amount"),
    ('{"model": "m", "day": "2026-12-03", "at": 1, "cost": "0.1"}', "cost: not an amount"),
    ('{"model": "m", "day": "2026-12-03", "at": 1, "status": 42}', "status: not an HTTP status"),
    ('{"model": "m", "day": "yesterday", "at": 1}', "day: not YYYY-MM-DD"),
]


def test_events_the_drain_cannot_apply_go_to_the_dead_letter_list(
    client: httpx.Client,
    api_key: str,
    redis_client: redis.Redis,
    start_worker: StartWorker,
    start_api: Callable[..., WebProcess],
) -> None:
    # Good turns, and between each two of them poison, all in the inbox before a worker runs.
    # The poison goes to the inbox the good turns use: the shard of the key's owner.
    inbox = layout_for(redis_client).shard(owner_id(api_key, SESSION_SECRET.encode())).usage_inbox
    replies = []
    for index, (raw, _) in enumerate(POISON):
        replies.append(chat(client, api_key, f"a good turn {index}"))
        redis_client.rpush(inbox, raw)
    replies.append(chat(client, api_key, "the last good turn"))
    worker = start_worker()

    wait_for(
        lambda: not inbox_events(redis_client) and not pending_events(redis_client),
        timeout=VISIBLE_WITHIN,
        what="inbox drained",
    )
    time.sleep(2.2)  # two more drain ticks: a poison event applied again would count twice
    # Each good turn counted exactly once, in its session and in the day's metrics.
    for reply in replies:
        assert session_usage(client, api_key, reply["session_id"])["turns"] == 1
    totals = metric_totals(redis_client)
    assert totals[DEFAULT_MODEL]["requests"] == len(replies)
    assert "m" not in totals
    # Each poison event is in the dead-letter list, whole, with its reason; and counted.
    dead = [json.loads(entry) for entry in dead_events(redis_client)]
    assert [(entry["event"], entry["reason"]) for entry in dead] == [
        (raw.decode() if isinstance(raw, bytes) else raw, reason) for raw, reason in POISON
    ]
    assert all(isinstance(entry["at"], int) for entry in dead)
    assert dead_count(redis_client) == len(POISON)
    logs = logged(worker, "usage events set aside in the dead-letter list")
    assert [entry["level"] for entry in logs] == ["ERROR"] * len(logs)
    assert sum(entry["dead"] for entry in logs) == len(POISON)
    # Operators see them counted in /metrics and /admin/stats.
    metrics = client.get("/metrics").text
    assert f"chat_usage_dead_events {float(len(POISON))}" in metrics.splitlines()
    assert "chat_usage_inbox_events 0.0" in metrics.splitlines()
    token = "admin-token-for-dead-letters-0123"
    with httpx.Client(base_url=start_api(ADMIN_TOKEN=token).url, timeout=30) as admin:
        stats = admin.get("/admin/stats", headers=bearer(token)).json()
    assert (stats["usage_dead"], stats["usage_backlog"]) == (len(POISON), 0)


def test_failing_job_is_retried_with_backoff_then_logged_with_reason(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    worker = start_worker()
    # The (first shard's) inbox under the wrong type: every drain fails inside Redis with
    # WRONGTYPE.
    inbox = layout_for(redis_client).shards[0].usage_inbox
    redis_client.set(inbox, "not a list")
    # Tries 1 to 4 after the code's 1, 2 and 4 s backoff: about 7 s, with room for slack.
    gave_up = wait_for(
        lambda: logged(worker, "job failed for good"), timeout=20, what="`job failed for good`"
    )
    retries = logged(worker, "job failed; retrying")
    assert {entry["try"] for entry in retries} >= {1, 2, 3}
    assert gave_up[0]["job"] == "drain_usage"
    assert gave_up[0]["try"] == 4
    assert "WRONGTYPE" in gave_up[0]["error"]
    # Backed off, not retried at once: the first give-up comes 1 + 2 + 4 s after a first try.
    assert log_time(gave_up[0]) - min(log_time(e) for e in retries) >= timedelta(seconds=6)

    # Repaired, the next runs drain again.
    redis_client.delete(inbox)
    reply = chat(client, api_key, "after the repair")
    wait_for(
        lambda: session_usage(client, api_key, reply["session_id"])["turns"] == 1,
        timeout=VISIBLE_WITHIN,
        what="usage after the repair",
    )


@pytest.mark.stores("standalone")  # its own Redis, stopped and started again
def test_worker_rides_out_a_redis_outage(standin: StandinServer) -> None:
    with RedisServer() as server:
        store = redis.Redis.from_url(server.url)
        with WorkerPool(base_env(server.url, standin)) as pool:
            worker = pool.start()
            server.stop()
            wait_for(
                lambda: "redis unreachable" in worker.logs(),
                timeout=10,
                what="the worker logs the connection failure",
            )
            time.sleep(1.0)
            server.start()
            assert worker.running(), (
                f"the worker exited while Redis was away:\n{worker.logs()[-1500:]}"
            )
            # Back: it beats again (the restarted Redis is empty) and drains the inbox.
            wait_for(
                lambda: store.exists(HEARTBEAT), timeout=10, what="a heartbeat after the outage"
            )
            now = datetime.now(UTC)
            event = {"at": int(now.timestamp() * 1000), "day": now.strftime("%Y-%m-%d"),
                     "model": DEFAULT_MODEL, "status": 500}  # fmt: skip
            store.rpush("chat:usage:inbox", json.dumps(event))
            wait_for(
                lambda: store.llen("chat:usage:inbox") == 0,
                timeout=VISIBLE_WITHIN,
                what="inbox drained",
            )
            assert metric_totals(store)[DEFAULT_MODEL]["errors:500"] == 1
        store.close()


def test_metrics_catch_up_when_the_worker_starts_late(
    api_key: str,
    redis_client: redis.Redis,
    start_api: Callable[..., WebProcess],
    start_worker: StartWorker,
) -> None:
    web = start_api()
    with httpx.Client(base_url=web.url, timeout=30) as http:
        first = chat(http, api_key, "no worker yet")
        replies = [first, chat(http, api_key, "still none", session_id=first["session_id"])]
        assert session_usage(http, api_key, first["session_id"])["turns"] == 0
        assert http.get("/health").json()["worker"] == "absent"

        worker = start_worker()
        usage = wait_for(
            lambda: (u := session_usage(http, api_key, first["session_id"]))["turns"] == 2 and u,
            timeout=VISIBLE_WITHIN,
            what="the waiting usage applied",
        )
        assert counted(usage) == expected_usage(replies)

    # The API going away does not stop the worker: it keeps beating.
    web.stop()
    beat = heartbeat(redis_client)
    wait_for(
        lambda: heartbeat(redis_client) > beat,
        timeout=8,
        what="a heartbeat with the API down",
        interval=0.2,
    )
    assert worker.running()
