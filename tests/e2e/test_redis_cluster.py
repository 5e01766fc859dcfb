"""The API on a real Redis Cluster: every script it runs touches one slot.

The behaviour tests of sessions, streaming, `/v1` and limits run on the cluster too (the
modules marked `stores`); this module watches what reaches the cluster's masters.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from app.clock import DAY_MS
from app.store import keys
from app.store.client import lua_script
from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.e2e.test_worker import (
    WorkerPool,
    chat,
    counted,
    expected_usage,
    metric_totals,
    session_usage,
    wait_for,
)
from tests.support.redis_state import (
    inbox_events,
    indexed_sessions,
    layout_for,
    pending_events,
)
from workers.usage_drain import USAGE_LUA

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


def _turns(http: httpx.Client, keys_: list[str], turns_each: int) -> dict[str, list[Any]]:
    """`turns_each` turns in one session of each key: the replies by session id."""
    replies: dict[str, list[Any]] = {}
    for key in keys_:
        first = chat(http, key, "first", model=MODEL)
        session = {"session_id": first["session_id"], "model": MODEL}
        replies[first["session_id"]] = [first] + [
            chat(http, key, f"turn {n}", **session) for n in range(1, turns_each)
        ]
    return replies


def _owners_of_many_shards(count: int) -> list[str]:
    """Keys whose owners are in `count` different shards."""
    found: dict[int, str] = {}
    layout = keys.CLUSTER
    while len(found) < count:
        key = "sk-or-v1-" + secrets.token_hex(32)
        shard = layout.shards.index(layout.shard(owner_id(key, SESSION_SECRET.encode())))
        found.setdefault(shard, key)
    return list(found.values())


def test_two_workers_drain_usage_on_the_cluster_exactly_once(
    client: httpx.Client, store: Store, standin: StandinServer, redis_client: Any
) -> None:
    """Turns of owners in several shards wait in their inboxes; two workers drain them at
    once: each turn counts once in its session's usage and in the day's metrics."""
    api_keys = _owners_of_many_shards(4)
    replies = _turns(client, api_keys, 3)
    assert len(inbox_events(redis_client)) == 12

    with WorkerPool(base_env(store, standin)) as pool:
        pool.start()
        pool.start()
        wait_for(
            lambda: not inbox_events(redis_client) and not pending_events(redis_client),
            timeout=10,
            what="every inbox and pending list empty",
        )
        time.sleep(2.2)  # two more ticks of each: an event counted again would show now
        for key, (session_id, conversation) in zip(api_keys, replies.items(), strict=True):
            assert counted(session_usage(client, key, session_id)) == expected_usage(conversation)
    totals = metric_totals(redis_client)
    assert int(totals[MODEL]["requests"]) == 12
    assert int(totals[MODEL]["total_tokens"]) == sum(
        r["usage"]["total_tokens"] for conversation in replies.values() for r in conversation
    )


def test_a_drain_cut_between_its_steps_loses_nothing_and_counts_nothing_twice(
    client: httpx.Client, store: Store, standin: StandinServer, redis_client: Any, api_key: str
) -> None:
    """The shard's step done and one session's event applied, as a worker that died there
    leaves them: the next worker applies the rest, and that one not again."""
    replies = _turns(client, [api_key], 3)
    ((session_id, conversation),) = replies.items()
    shard = keys.CLUSTER.shard(owner_id(api_key, SESSION_SECRET.encode()))
    drain = redis_client.register_script(lua_script("drain_usage_shard.lua", after=USAGE_LUA))
    shard_keys = [shard.usage_inbox, shard.usage_dead, shard.usage_pending, shard.usage_pending_seq]
    args = [500, keys.PREFIX, DAY_MS, keys.USAGE_DEAD_CAP, shard.suffix]
    assert drain(keys=shard_keys, args=args) == [3, 0]
    pending = pending_events(redis_client)
    assert len(pending) == 3 and not inbox_events(redis_client)
    # The day's metrics are counted in the shard's step; the sessions' usage not yet.
    assert int(metric_totals(redis_client)[MODEL]["requests"]) == 3
    assert session_usage(client, api_key, session_id)["turns"] == 0
    apply = redis_client.register_script(lua_script("apply_session_usage.lua", after=USAGE_LUA))
    session = keys.session_keys(
        keys.session_ref(owner_id(api_key, SESSION_SECRET.encode()), session_id)
    )
    seq, _, raw = pending[0].partition(b" ")
    assert apply(keys=[session.meta, session.usage], args=[seq, raw]) == 1
    assert apply(keys=[session.meta, session.usage], args=[seq, raw]) == 0  # replayed: nothing
    assert session_usage(client, api_key, session_id)["turns"] == 1

    with WorkerPool(base_env(store, standin)) as pool:
        pool.start()
        wait_for(
            lambda: not pending_events(redis_client), timeout=10, what="the pending list applied"
        )
        time.sleep(1.2)
        assert counted(session_usage(client, api_key, session_id)) == expected_usage(conversation)
    assert int(metric_totals(redis_client)[MODEL]["requests"]) == 3


def test_every_script_of_the_worker_touches_one_slot(
    client: httpx.Client,
    masters: list[ClusterNode],
    store: Store,
    redis_client: Any,
    standin: StandinServer,
) -> None:
    """The worker's usage drain and pruning (idle sessions, MAX_SESSIONS_PER_OWNER,
    MAX_SESSIONS, owner indexes) on the cluster: each EVALSHA names keys of one slot held by
    the master that ran it."""
    api_keys = _owners_of_many_shards(3)
    replies = _turns(client, api_keys, 2)
    for key in api_keys:  # a second session each, for the owner's cap to evict
        chat(client, key, "another", model=MODEL)
    # An owner-index entry of a session Redis expired long ago, and its owner.
    old_ms = int((time.time() - 25 * 3600) * 1000)
    ghost = "ab" * 16
    layout = layout_for(redis_client)
    redis_client.zadd(layout.owner_sessions(ghost), {"gone": old_ms})
    redis_client.zadd(layout.shard(ghost).owners, {ghost: old_ms})
    redis_client.zadd(layout.shard(ghost).all_sessions, {f"{ghost}:gone": old_ms})
    env = {
        **base_env(store, standin),
        "PRUNE_INTERVAL_SECONDS": "1",
        "MAX_SESSIONS_PER_OWNER": "1",
        "MAX_SESSIONS": "2",
    }
    with Watch(masters) as watch, WorkerPool(env) as pool:
        pool.start()
        wait_for(
            lambda: not inbox_events(redis_client) and not pending_events(redis_client),
            timeout=10,
            what="usage drained",
        )
        wait_for(
            lambda: (
                indexed_sessions(redis_client) == 2
                and not redis_client.zscore(layout.shard(ghost).owners, ghost)
            ),
            timeout=10,
            what="pruned down to MAX_SESSIONS, the ghost owner forgotten",
        )
    for key in api_keys:
        assert client.get("/sessions", headers=bearer(key)).json()["total"] <= 1
    assert sum(1 for conversation in replies.values() for _ in conversation) == 6

    scripts = [(port, script_keys) for port, script_keys in watch.scripts if script_keys]
    port_of = {node.port: node for node in masters}
    for port, script_keys in scripts:
        slots = {slot_of(redis_client, key) for key in script_keys}
        assert len(slots) == 1, (script_keys, slots)
        for key in script_keys:
            assert _holds(port_of[port], key), (port, key)
    touched = {key for _, script_keys in scripts for key in script_keys}
    assert any(key.startswith("chat:usage:pending:{") for key in touched)
    assert any(key.endswith("}:usage") for key in touched)
    assert any(key.startswith("chat:sessions:{") for key in touched)
    assert any(key.startswith("chat:owners:{") for key in touched)
    assert any(key.startswith("chat:owner:{") for key in touched)


def test_applied_events_leave_the_pending_list_whoever_dropped_some_first(
    store: Store, redis_client: Any
) -> None:
    """A worker drops what it applied: the list's head as it read it, or what is left of it
    once another worker dropped part of it; never an event it did not apply."""
    drop = redis_client.register_script(lua_script("drop_pending.lua"))
    pending = keys.CLUSTER.shards[3].usage_pending
    entries = [f"{seq} {{}}".encode() for seq in range(1, 7)]
    redis_client.rpush(pending, *entries)
    assert drop(keys=[pending], args=entries[:2]) == 2  # the head, as read
    assert redis_client.lrange(pending, 0, -1) == entries[2:]
    # A second worker read entries 1 to 4, and the first dropped 3 meanwhile.
    assert drop(keys=[pending], args=[entries[2]]) == 1
    assert drop(keys=[pending], args=entries[:4]) == 1
    assert redis_client.lrange(pending, 0, -1) == entries[4:]
