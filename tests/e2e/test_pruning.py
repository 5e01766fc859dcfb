"""The worker's pruning: idle sessions, orphaned index entries, MAX_SESSIONS, once per tick."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.store import keys
from app.store.client import lua_script
from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.e2e.test_worker import (
    WorkerPool,
    chat,
    log_time,
    logged,
    members,
    owner_of,
    session_keys,
    wait_for,
)
from tests.support.redis_state import indexed_sessions, layout_for, session_tag
from workers.pruning import PRUNE_LUA

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from app.store.keys import Shard
    from tests.conftest import Store
    from tests.e2e.test_worker import StartWorker
    from tests.standin import StandinServer
    from tests.support.processes import ProcfileProcess, WebProcess

pytestmark = pytest.mark.stores("standalone", "cluster")

# 1.8 s: sessions go idle within a test.
SHORT_HOURS = "0.0005"
PRUNE_EVERY_SECOND = {"PRUNE_INTERVAL_SECONDS": "1"}
REPORT_FIELDS = {"idle", "expired_index_entries", "evicted", "owner_index_entries",
                 "owners_forgotten", "migrated", "duration_ms"}  # fmt: skip


@pytest.fixture
def start_worker(store: Store, standin: StandinServer) -> Iterator[StartWorker]:
    with WorkerPool(base_env(store, standin)) as pool:
        yield pool.start


def shard_of(client: redis.Redis, owner: str) -> Shard:
    """The owner's shard of the global indexes (the one shard of a standalone Redis)."""
    return layout_for(client).shard(owner)


def owner_index(client: redis.Redis, owner: str) -> str:
    return layout_for(client).owner_sessions(owner)


def known_owners(client: redis.Redis) -> list[str]:
    """The owners every shard's `chat:owners` names."""
    return [o for shard in layout_for(client).shards for o in members(client, shard.owners)]


def prune_reports(*workers: ProcfileProcess) -> list[dict[str, Any]]:
    return [entry for worker in workers for entry in logged(worker, "prune run")]


def reports_so_far(*workers: ProcfileProcess) -> list[dict[str, Any]]:
    """The reports of every run up to now. A run's log line is written up to a flush delay
    after the run: waiting for the line of one run more takes in the one still held."""
    seen = len(prune_reports(*workers))
    wait_for(lambda: len(prune_reports(*workers)) > seen, timeout=10, what="one more prune run")
    return prune_reports(*workers)


def total(reports: list[dict[str, Any]], field: str) -> int:
    return sum(int(report[field]) for report in reports)


def indexed_refs(client: redis.Redis) -> list[str]:
    """The sessions every shard's `chat:sessions` names (`<owner>:<id>`), lowest score first."""
    scored: list[tuple[float, str]] = []
    for shard in layout_for(client).shards:
        entries: list[tuple[bytes, float]] = client.zrange(
            shard.all_sessions, 0, -1, withscores=True
        )  # type: ignore[assignment]
        scored += [(score, member.decode()) for member, score in entries]
    return [member for _, member in sorted(scored)]


def indexed_ids(client: redis.Redis) -> list[str]:
    """The session ids of `indexed_refs`."""
    return [member.rpartition(":")[2] for member in indexed_refs(client)]


def indexed_score(client: redis.Redis, owner: str, session_id: str) -> float | None:
    """The session's score in its shard's `chat:sessions`."""
    return client.zscore(shard_of(client, owner).all_sessions, f"{owner}:{session_id}")  # type: ignore[return-value]


def gone(client: redis.Redis, session_id: str, owner: str) -> bool:
    """No key of the session is left, and no index names it."""
    return (
        not session_keys(client, session_id)
        and indexed_score(client, owner, session_id) is None
        and client.zscore(owner_index(client, owner), session_id) is None
    )


def test_idle_sessions_are_removed_with_every_key_and_index_entry(
    client: httpx.Client,
    api_key: str,
    redis_client: redis.Redis,
    standin: StandinServer,
    start_worker: StartWorker,
) -> None:
    other_key = api_key[:-4] + "beef"
    first = chat(client, api_key, "one")
    chat(client, api_key, "two", session_id=first["session_id"])
    second = chat(client, other_key, "someone else's")
    ids = [first["session_id"], second["session_id"]]
    owners = [owner_of(redis_client, session_id) for session_id in ids]
    # The API keeps them for 24 h: only the pruner can remove them within this test.
    for session_id in ids:
        assert len(session_keys(redis_client, session_id)) == 3
        meta = f"{session_tag(redis_client, session_id)}:meta"
        ttl_ms: int = redis_client.pttl(meta)  # type: ignore[assignment]
        assert ttl_ms > 3_600_000

    worker = start_worker(SESSION_CLEANUP_HOURS=SHORT_HOURS, **PRUNE_EVERY_SECOND)
    wait_for(
        lambda: all(gone(redis_client, s, o) for s, o in zip(ids, owners, strict=True)),
        timeout=10,
        what="both sessions pruned",
    )
    for owner in owners:
        assert redis_client.exists(owner_index(redis_client, owner)) == 0
    wait_for(
        lambda: not known_owners(redis_client),
        timeout=5,
        what="owners without sessions forgotten",
    )
    assert client.get(f"/sessions/{ids[0]}", headers=bearer(api_key)).status_code == 404
    assert client.get("/sessions", headers=bearer(other_key)).json()["total"] == 0

    # Every run reports what it removed and how long it took.
    reports = reports_so_far(worker)
    assert reports
    assert all(report.keys() >= REPORT_FIELDS for report in reports)
    assert all(report["duration_ms"] >= 0 for report in reports)
    assert total(reports, "idle") == 2
    assert total(reports, "owners_forgotten") == 2


def test_index_entries_without_sessions_are_removed(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    live = chat(client, api_key, "still here")["session_id"]
    owner = owner_of(redis_client, live)
    # Entries a day and more old for ids with no keys: what sessions expired by TTL leave behind.
    old_ms = int((time.time() - 25 * 3600) * 1000)
    ghost = "9" * 32  # an owner whose every session expired
    redis_client.zadd(shard_of(redis_client, ghost).all_sessions, {f"{ghost}:ghost-a": old_ms})
    redis_client.zadd(shard_of(redis_client, owner).all_sessions, {f"{owner}:ghost-b": old_ms})
    redis_client.zadd(owner_index(redis_client, ghost), {"ghost-a": old_ms})
    redis_client.zadd(shard_of(redis_client, ghost).owners, {ghost: old_ms})
    redis_client.zadd(owner_index(redis_client, owner), {"ghost-b": old_ms})

    # Default SESSION_CLEANUP_HOURS (24 h): the live session is not idle.
    worker = start_worker(**PRUNE_EVERY_SECOND)
    wait_for(
        lambda: indexed_ids(redis_client) == [live],
        timeout=5,
        what="only the live session left in chat:sessions",
    )
    wait_for(
        lambda: members(redis_client, owner_index(redis_client, owner)) == [live],
        timeout=5,
        what="only the live session left in its owner's index",
    )
    wait_for(
        lambda: known_owners(redis_client) == [owner],
        timeout=5,
        what="the ghost owner forgotten",
    )
    assert redis_client.exists(owner_index(redis_client, ghost)) == 0
    tag = f"chat:{{{owner}:{live}}}"
    assert redis_client.exists(f"{tag}:meta", f"{tag}:messages") == 2
    reports = reports_so_far(worker)
    assert total(reports, "idle") == 0
    assert total(reports, "expired_index_entries") == 2
    assert total(reports, "owner_index_entries") == 2


def test_sessions_expired_by_redis_leave_no_index_entries(
    api_key: str,
    redis_client: redis.Redis,
    start_api: Callable[..., WebProcess],
    start_worker: StartWorker,
) -> None:
    # Redis expires the keys after about 1.1 s; the pruner's own cutoff is about 2.9 s.
    web = start_api(SESSION_CLEANUP_HOURS="0.0003")
    worker = start_worker(SESSION_CLEANUP_HOURS="0.0008", **PRUNE_EVERY_SECOND)
    with httpx.Client(base_url=web.url, timeout=30) as http:
        session_id = chat(http, api_key, "short lived")["session_id"]
    owner = owner_of(redis_client, session_id)

    wait_for(
        lambda: not session_keys(redis_client, session_id),
        timeout=5,
        what="Redis expires the session's keys",
    )
    # Expired, but still named by the global index: an orphan.
    assert indexed_score(redis_client, owner, session_id) is not None
    wait_for(
        lambda: indexed_score(redis_client, owner, session_id) is None,
        timeout=10,
        what="the orphaned entry removed from chat:sessions",
    )
    wait_for(
        lambda: redis_client.zscore(shard_of(redis_client, owner).owners, owner) is None,
        timeout=5,
        what="the owner with an expired index forgotten",
    )
    reports = reports_so_far(worker)
    assert total(reports, "expired_index_entries") == 1
    assert total(reports, "idle") == 0


# prune_sessions.lua is a standalone Redis's; a cluster's steps are checked below.
@pytest.mark.stores("standalone")
def test_prune_script_keeps_a_session_active_after_the_pick(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    prune = redis_client.register_script(lua_script("prune_sessions.lua", after=PRUNE_LUA))
    session_id = chat(client, api_key, "busy")["session_id"]
    owner = owner_of(redis_client, session_id)
    raw_updated: bytes = redis_client.hget(f"chat:{{{owner}:{session_id}}}:meta", "updated")  # type: ignore[assignment]
    updated = int(raw_updated)
    before = session_keys(redis_client, session_id)

    # Picked with a cutoff older than its last turn: a turn landed between pick and delete.
    assert prune(keys=["chat:sessions"], args=["chat", updated - 1, f"{owner}:{session_id}"]) == [
        0,
        0,
    ]
    assert session_keys(redis_client, session_id) == before
    assert indexed_score(redis_client, owner, session_id) == updated
    assert redis_client.zscore(owner_index(redis_client, owner), session_id) == updated
    assert client.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 200

    # Still idle at the cutoff: deleted, keys and index entries alike.
    assert prune(keys=["chat:sessions"], args=["chat", updated, f"{owner}:{session_id}"]) == [1, 0]
    assert gone(redis_client, session_id, owner)


@pytest.mark.stores("cluster")
def test_cluster_prune_steps_keep_a_session_active_after_the_pick(
    client: httpx.Client, api_key: str, redis_client: redis.Redis
) -> None:
    """A cluster's pruning: the session in its slot, then each index entry in its own, each
    only while still idle at the cutoff."""
    prune = redis_client.register_script(lua_script("prune_session.lua", after=PRUNE_LUA))
    unindex = redis_client.register_script(lua_script("unindex_idle.lua"))
    session_id = chat(client, api_key, "busy")["session_id"]
    owner = owner_of(redis_client, session_id)
    ref = keys.session_ref(owner, session_id)
    session = list(keys.session_keys(ref))
    raw_updated: bytes = redis_client.hget(session[0], "updated")  # type: ignore[assignment]
    updated = int(raw_updated)
    before = session_keys(redis_client, session_id)
    all_index, own_index = (
        shard_of(redis_client, owner).all_sessions,
        owner_index(redis_client, owner),
    )

    # Picked with a cutoff older than its last turn: a turn landed between pick and delete.
    assert prune(keys=session, args=[updated - 1]) == 0
    assert unindex(keys=[all_index], args=[updated - 1, ref]) == 0
    assert unindex(keys=[own_index], args=[updated - 1, session_id]) == 0
    assert session_keys(redis_client, session_id) == before
    assert indexed_score(redis_client, owner, session_id) == updated
    assert client.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 200

    # Still idle at the cutoff: deleted; once more, only its index entries were left.
    assert prune(keys=session, args=[updated]) == 1
    assert prune(keys=session, args=[updated]) == 2
    assert unindex(keys=[all_index], args=[updated, ref]) == 1
    assert unindex(keys=[own_index], args=[updated, session_id]) == 1
    assert gone(redis_client, session_id, owner)


def test_busy_session_survives_pruning_under_a_short_ttl(
    api_key: str,
    redis_client: redis.Redis,
    start_api: Callable[..., WebProcess],
    start_worker: StartWorker,
) -> None:
    web = start_api(SESSION_CLEANUP_HOURS=SHORT_HOURS)
    worker = start_worker(SESSION_CLEANUP_HOURS=SHORT_HOURS, **PRUNE_EVERY_SECOND)
    with httpx.Client(base_url=web.url, timeout=30) as http:
        idle = chat(http, api_key, "left alone")["session_id"]
        busy = chat(http, api_key, "turn 1")
        assert busy["response"] == "Echo 1: turn 1"
        turns = 1
        # Over three TTLs and several prune ticks, a turn every 0.3 s.
        until = time.monotonic() + 6
        while time.monotonic() < until:
            time.sleep(0.3)
            turns += 1
            reply = chat(http, api_key, f"turn {turns}", session_id=busy["session_id"])
            # The stand-in counts the user messages it got: the whole history was still there.
            assert reply["response"] == f"Echo {turns}: turn {turns}"
        detail = http.get(f"/sessions/{busy['session_id']}", headers=bearer(api_key)).json()
    assert detail["message_count"] == 2 * turns
    # The pruner was at work meanwhile: the idle session is gone from the index.
    owner = owner_of(redis_client, busy["session_id"])
    assert indexed_score(redis_client, owner, idle) is None
    assert len(prune_reports(worker)) >= 4


def test_max_sessions_evicts_least_recently_active_first(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    ids = [chat(client, api_key, f"session {n}")["session_id"] for n in range(5)]
    # A later turn makes the first-created session the most recently active.
    chat(client, api_key, "back again", session_id=ids[0])
    by_activity = [ids[1], ids[2], ids[3], ids[4], ids[0]]
    assert indexed_ids(redis_client) == by_activity
    owner = owner_of(redis_client, ids[0])

    worker = start_worker(MAX_SESSIONS="2", **PRUNE_EVERY_SECOND)
    wait_for(lambda: indexed_sessions(redis_client) == 2, timeout=5, what="down to MAX_SESSIONS")
    assert indexed_ids(redis_client) == by_activity[3:]
    for session_id in by_activity[:3]:
        assert gone(redis_client, session_id, owner)
    for session_id in by_activity[3:]:
        assert redis_client.exists(f"chat:{{{owner}:{session_id}}}:meta") == 1
    assert total(reports_so_far(worker), "evicted") == 3

    # One more session: the next least recently active goes.
    newest = chat(client, api_key, "newest")["session_id"]
    wait_for(
        lambda: indexed_score(redis_client, owner, by_activity[3]) is None,
        timeout=5,
        what="the next oldest evicted",
    )
    assert indexed_ids(redis_client) == [ids[0], newest]
    assert gone(redis_client, by_activity[3], owner)
    assert total(reports_so_far(worker), "evicted") == 4


def test_two_workers_prune_once_per_tick(
    redis_client: redis.Redis, store: Store, standin: StandinServer
) -> None:
    env = {**base_env(store, standin), **PRUNE_EVERY_SECOND}
    with WorkerPool(env) as pool:
        # Started together, as replicas are.
        workers = [pool.start(), pool.start()]
        # Past each worker's start-up run: from here on only the cron ticks run.
        begin = max(log_time(logged(w, "worker started")[0]) for w in workers)
        begin = begin.replace(microsecond=0) + timedelta(seconds=2)
        seconds = 6
        end = begin + timedelta(seconds=seconds)
        wait_for(
            lambda: any(log_time(r) >= end + timedelta(seconds=1) for r in prune_reports(*workers)),
            timeout=seconds + 10,
            what="prune runs past the observed window",
            interval=0.2,
        )
        assert all(worker.running() for worker in workers)
        runs = prune_reports(*workers)
    ticks = Counter(log_time(r).replace(microsecond=0) for r in runs if begin <= log_time(r) < end)
    assert max(ticks.values()) == 1, f"runs per tick: {sorted(ticks.items())}"
    # It did run: one a second, give or take a tick at the edges.
    assert len(ticks) >= seconds - 1, f"runs per tick: {sorted(ticks.items())}"


@pytest.mark.stores("standalone")  # the layout before owner-scoped ids was never on a cluster
def test_sessions_of_the_layout_before_owner_scoped_ids_move_to_their_owners_name(
    client: httpx.Client, api_key: str, redis_client: redis.Redis, start_worker: StartWorker
) -> None:
    """An upgrade loses no session: keys tagged `{<id>}` move to `{<owner>:<id>}`."""
    owner = owner_id(api_key, SESSION_SECRET.encode())
    now_ms = int(time.time() * 1000)
    old = "chat:{from-before}"
    r: Any = redis_client
    r.hset(f"{old}:meta", mapping={"owner": owner, "created": now_ms, "updated": now_ms,
                                  "title": "old", "turns": 1, "message_count": 2})  # fmt: skip
    stamp = "2026-12-01T10:00:00Z"
    stored = [{"role": "user", "content": "kept across the upgrade", "timestamp": stamp},
              {"role": "assistant", "content": "so it is", "timestamp": stamp}]  # fmt: skip
    r.rpush(f"{old}:messages", *map(json.dumps, stored))
    r.rpush(f"{old}:turns", "turn-1")
    for name in (f"{old}:meta", f"{old}:messages", f"{old}:turns"):
        r.pexpire(name, 3_600_000)
    r.zadd("chat:sessions", {"from-before": now_ms})
    r.zadd(owner_index(redis_client, owner), {"from-before": now_ms})
    r.zadd("chat:owners", {owner: now_ms})

    worker = start_worker(**PRUNE_EVERY_SECOND)
    wait_for(
        lambda: (
            indexed_ids(redis_client) == ["from-before"]
            and indexed_refs(redis_client) == [f"{owner}:from-before"]
        ),
        timeout=5,
        what="the session renamed in chat:sessions",
    )

    assert not r.keys("chat:{from-before}:*")
    new = f"chat:{{{owner}:from-before}}"
    assert 0 < r.pttl(f"{new}:messages") <= 3_600_000
    detail = client.get("/sessions/from-before", headers=bearer(api_key)).json()
    assert [m["content"] for m in detail["messages"]] == ["kept across the upgrade", "so it is"]
    assert total(reports_so_far(worker), "migrated") == 1
