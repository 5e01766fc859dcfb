"""Spending limits an attacker cannot get past: holds taken before the call, settled after it.

Through the real API processes, two replicas where it matters, against the stand-in.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.store.client import lua_script
from app.store.limits import ADMISSION_LUA, Limits, TurnWant, admission_args, admission_keys
from app.store.sessions import commit_turn_script
from app.store.spend import Prices
from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.e2e.test_chat import limit_key
from tests.e2e.test_rate_limits import header, seconds_to_utc_midnight, turn
from tests.e2e.test_server_key import digest
from tests.e2e.test_streaming import EventReader, generation, poll
from tests.e2e.test_worker import WorkerPool
from tests.support.redis_state import estimates_queued

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.conftest import Store
    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

# Priced in the catalogue: $3 and $15 a million prompt and completion tokens.
MODEL = "anthropic/claude-sonnet-4.5"


def limit_state(r: Any, key: str) -> dict[str, int]:
    """The owner's limit hash, as numbers (the turn holds `h:<id>` left out)."""
    state = r.hgetall(limit_key(key))
    return _numbers(state)


def _numbers(state: dict[bytes, bytes]) -> dict[str, int]:
    return {
        name.decode(): int(float(value))
        for name, value in state.items()
        if not name.startswith(b"h:")
    }


def settled(r: Any, key: str) -> dict[str, int]:
    """The limit state once no turn holds anything (the last one settled in the background)."""
    return poll(
        lambda: limit_state(r, key),
        lambda state: state.get("held_tokens", 0) == 0 and state.get("held_cost", 0) == 0,
        seconds=5,
    )


def test_a_burst_on_two_replicas_overshoots_by_at_most_one_turn(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    limit, max_tokens, answer_tokens = 2000, 400, 410
    env = {"RATE_LIMIT_PER_MINUTE": "0", "TOKEN_LIMIT_PER_DAY": str(limit)}
    replicas = [start_api(**env), start_api(**env)]
    # Each answer takes a while and spends nearly all of its max_tokens, so the turns overlap.
    usage = {"prompt_tokens": 10, "completion_tokens": 400, "total_tokens": answer_tokens}
    standin.control.script(api_key, *[{"delay": 0.5, "usage": usage}] * 50)
    clients = [httpx.Client(base_url=web.url, timeout=30) for web in replicas]
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(lambda n: turn(clients[n % 2], api_key, max_tokens=max_tokens), range(50))
            )
    finally:
        for http in clients:
            http.close()

    statuses = [answer.status_code for answer in answers]
    admitted = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert len(standin.control.requests(api_key)) == admitted
    # Without holds every one of the 50 would pass: none had settled when the others came.
    used = settled(redis_client, api_key)["tokens"]
    assert used == admitted * answer_tokens
    # A hold is the prompt's estimate plus max_tokens; the turns admitted went past the limit
    # by at most the last one's.
    one_hold = max_tokens + 10
    assert limit <= used < limit + one_hold + answer_tokens
    assert admitted <= math.ceil(limit / max_tokens) + 1
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert "held by turns in flight" in refused.json()["error"]["message"]


def test_the_daily_budget_refuses_turns_with_a_retry_after_to_midnight(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    web = start_api(RATE_LIMIT_PER_MINUTE="0", BUDGET_USD_PER_DAY="0.01")
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30, "cost": 0.004}
    standin.control.script(api_key, *[{"usage": usage}] * 5)
    with httpx.Client(base_url=web.url, timeout=30) as http:
        answers = [turn(http, api_key, model=MODEL) for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    # Spent is OpenRouter's `usage.cost`: 0.004, 0.008, 0.012; the third was under budget.
    assert [answer.headers["x-budget-remaining-usd"] for answer in answers[:3]] == [
        "0.006000",
        "0.002000",
        "0.000000",
    ]
    refused = answers[3]
    error = refused.json()["error"]
    assert error["type"] == "rate_limited"
    assert error["message"].startswith("budget reached: 0.012000 of 0.010000 USD")
    midnight = seconds_to_utc_midnight()
    assert midnight - 5 <= header(refused, "retry-after") <= midnight + 5
    assert refused.headers["x-budget-limit-usd"] == "0.010000"
    assert len(standin.control.requests(api_key)) == 3
    assert settled(redis_client, api_key)["cost"] == 12_000


def test_a_turn_is_held_at_its_models_prices_before_the_call(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    web = start_api(RATE_LIMIT_PER_MINUTE="0", BUDGET_USD_PER_DAY="1")
    standin.control.script(api_key, {"delay": 1.0})
    with httpx.Client(base_url=web.url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
        running = pool.submit(turn, http, api_key, model=MODEL, max_tokens=1000, message="hi")
        held = poll(
            lambda: limit_state(redis_client, api_key),
            lambda state: state.get("held_cost", 0) > 0,
        )
        answer = running.result()
    assert answer.status_code == 200, answer.text
    # "hi" is one token at most; 1000 completion tokens at $15 a million: 15000 micro-USD.
    assert 15_000 < held["held_cost"] <= 15_000 + 10
    spent = settled(redis_client, api_key)
    assert spent["cost"] == math.ceil(answer.json()["usage"]["cost"] * 1_000_000 - 1e-9)


def stream_and_hang_up(http: httpx.Client, key: str, message: str) -> int:
    """Start a stream, read its first delta and hang up; the status of the answer."""
    body = {"message": message, "stream": True, "model": MODEL}
    with http.stream("POST", "/chat", json=body, headers=bearer(key)) as response:
        if response.status_code != 200:
            return response.status_code
        for event in EventReader(response):
            if not event.is_comment and event.payload["type"] == "delta":
                break
    return 200


def test_streams_cut_by_the_client_pay_an_estimate(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    web = start_api(RATE_LIMIT_PER_MINUTE="0", TOKEN_LIMIT_PER_DAY="500")
    message = " ".join(f"word{n}" for n in range(60))
    standin.control.script(api_key, *[{"chunk_delay": 0.1}] * 40)
    statuses = []
    with httpx.Client(base_url=web.url, timeout=30) as http:
        for _ in range(40):
            statuses.append(stream_and_hang_up(http, api_key, message))
            if statuses[-1] != 200:
                break
            # The cut turn settles in the background: wait for it, as a patient attacker would.
            settled(redis_client, api_key)

    # Each cut stream is charged its prompt and the text relayed (about 4 bytes a token):
    # the limit is reached after a few, where before every one of the 40 was free.
    assert statuses[-1] == 429
    assert 2 <= len(statuses) <= 10
    used = settled(redis_client, api_key)["tokens"]
    assert used >= 500
    r: Any = redis_client
    records = [json.loads(raw) for raw in r.lrange("chat:usage:inbox", 0, -1)]
    cut = [record for record in records if record.get("estimated")]
    assert len(cut) == len(statuses) - 1
    assert all(record["prompt_tokens"] > len(message) // 4 for record in cut)


@pytest.mark.stores("standalone", "cluster")
def test_the_worker_corrects_a_cut_streams_estimate_with_openrouters_record(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    redis_client: redis.Redis,
    store: Store,
) -> None:
    """Server-key mode: the worker asks OpenRouter what the cut generation cost."""
    server_key, token = "sk-or-v1-" + "5" * 64, "app-token-" + "7" * 32
    env = {
        "OPENROUTER_API_KEY": server_key,
        "APP_TOKENS": f"web:{digest(token)}",
        "RATE_LIMIT_PER_MINUTE": "0",
        "TOKEN_LIMIT_PER_DAY": "100000",
    }
    web = start_api(**env)
    standin.control.script(server_key, {"chunk_delay": 0.1})
    message = " ".join(f"word{n}" for n in range(60))
    r: Any = redis_client
    limit = f"chat:limit:{{{owner_id(token, SESSION_SECRET.encode())}}}"
    with httpx.Client(base_url=web.url, timeout=30) as http:
        assert stream_and_hang_up(http, token, message) == 200
    estimated = poll(
        lambda: _numbers(r.hgetall(limit)),
        lambda state: state.get("tokens", 0) > 0 and state.get("held_tokens", 1) == 0,
        seconds=5,
    )["tokens"]
    # Queued just after the settle: under load, a moment later.
    poll(lambda: estimates_queued(r), lambda count: count == 1, seconds=5)

    with WorkerPool({**base_env(store, standin), **env}) as workers:
        workers.start()
        poll(lambda: estimates_queued(r), lambda count: count == 0, seconds=20)

    record = standin.control.requests(server_key)[-1]
    assert record["cancelled"]
    reported = generation(standin, server_key, record["generation_id"])
    corrected = _numbers(r.hgetall(limit))["tokens"]
    assert corrected == reported["tokens_prompt"] + reported["tokens_completion"]
    assert corrected != estimated


# ---- every write script detects its own replay ----------------------------------------------


OWNER = "0123456789abcdef0123456789abcdef"
LIMIT, HOLDS = f"chat:limit:{{{OWNER}}}", f"chat:limit:{{{OWNER}}}:holds"


def snapshot(r: Any) -> dict[str, Any]:
    """Every key's value (TTLs aside): what a replay must leave as it was."""
    out: dict[str, Any] = {}
    for name in sorted(r.scan_iter("*")):
        kind = r.type(name)
        if kind == b"hash":
            out[name] = r.hgetall(name)
        elif kind == b"list":
            out[name] = r.lrange(name, 0, -1)
        elif kind == b"zset":
            out[name] = r.zrange(name, 0, -1)
        else:
            out[name] = r.get(name)
    return out


# The admission's keys of OWNER, and arguments that check nothing but its limits.
ADMISSION_KEYS = admission_keys(OWNER, "192.0.2.1")


def admit_args(turn_id: str) -> list[Any]:
    want = TurnWant(turn_id, 300, 1000, Prices(3.0, 15.0, 0.0))
    return admission_args(Limits(60, 5000, 1_000_000), want)


def replayed(r: Any, call: Callable[[], Any]) -> tuple[Any, Any]:
    """Run a script, then again with the same arguments; the state after the replay must
    equal the state after the first run."""
    first = call()
    after_first = snapshot(r)
    second = call()
    assert snapshot(r) == after_first
    return first, second


@pytest.fixture
def r(redis_client: redis.Redis) -> Any:
    return redis_client  # emptied for each test


def test_a_replayed_admission_holds_once(r: Any) -> None:
    admit = r.register_script(lua_script("admit_turn.lua", after=ADMISSION_LUA))

    first, second = replayed(r, lambda: admit(keys=ADMISSION_KEYS, args=admit_args("t1")))

    assert first[0] == second[0] == 1
    assert int(r.hget(LIMIT, "held_tokens")) == math.ceil(300 / 3) + 1000


def test_a_replayed_session_read_admits_once(r: Any) -> None:
    open_turn = r.register_script(lua_script("open_turn.lua", after=ADMISSION_LUA))
    keys = [*ADMISSION_KEYS, "chat:{s1}:meta", "chat:{s1}:messages"]

    replayed(r, lambda: open_turn(keys=keys, args=[*admit_args("t1"), OWNER]))

    assert r.zscore(HOLDS, "t1") is not None


def test_a_replayed_settle_counts_once(r: Any) -> None:
    admit = r.register_script(lua_script("admit_turn.lua", after=ADMISSION_LUA))
    settle = r.register_script(lua_script("pass_through.lua", after=("settle.lua",)))
    admit(keys=ADMISSION_KEYS, args=admit_args("t1"))
    record = json.dumps({"model": MODEL, "status": 200})

    first, second = replayed(
        r, lambda: settle(keys=["chat:usage:inbox", LIMIT, HOLDS], args=[record, "t1", 42, 7])
    )

    assert first == [42, 7]
    assert second == [-1, -1]
    assert r.llen("chat:usage:inbox") == 1
    assert int(r.hget(LIMIT, "held_tokens")) == 0


def test_a_replayed_failure_without_limits_is_recorded_once(r: Any) -> None:
    settle = r.register_script(lua_script("pass_through.lua", after=("settle.lua",)))
    record = json.dumps({"model": MODEL, "status": 502})

    replayed(r, lambda: settle(keys=["chat:usage:inbox", LIMIT, HOLDS], args=[record, "t1", 0, 0]))

    assert r.llen("chat:usage:inbox") == 1
    # No limits: nothing counted, so no limit hash to keep.
    assert not r.exists(LIMIT)


def test_a_replayed_delete_answers_as_the_delete_did(r: Any) -> None:
    delete = r.register_script(lua_script("delete_session.lua"))
    tag = f"chat:{{{OWNER}:s1}}"
    r.hset(f"{tag}:meta", "owner", OWNER)
    r.rpush(f"{tag}:messages", "{}")
    r.zadd("chat:sessions", {f"{OWNER}:s1": 1})
    keys = [f"{tag}:meta", f"{tag}:messages", f"{tag}:turns", f"{tag}:usage", f"{tag}:deleted",
            "chat:sessions", f"chat:owner:{OWNER}:sessions"]  # fmt: skip

    first, second = replayed(r, lambda: delete(keys=keys, args=["s1", OWNER, "request-1"]))

    assert first == second == 1
    assert not r.exists(f"{tag}:meta", f"{tag}:messages")
    # Another request's delete of the gone session is told there is none.
    assert delete(keys=keys, args=["s1", OWNER, "request-2"]) == 0


def test_a_replayed_commit_saves_and_settles_once(r: Any) -> None:
    admit = r.register_script(lua_script("admit_turn.lua", after=ADMISSION_LUA))
    commit = r.register_script(commit_turn_script())
    admit(keys=ADMISSION_KEYS, args=admit_args("t1"))
    keys = [
        "chat:{s1}:meta",
        "chat:{s1}:messages",
        "chat:{s1}:turns",
        "chat:{s1}:usage",
        "chat:sessions",
        f"chat:owner:{OWNER}:sessions",
        "chat:usage:inbox",
        "chat:owners",
        LIMIT,
        HOLDS,
    ]
    message = json.dumps({"role": "user", "content": "hi"})
    answer = json.dumps({"role": "assistant", "content": "hello"})
    args = ["s1", OWNER, "t1", 1_700_000_000_000, 60_000, 50, MODEL, "hi", "", "{}", 30, 90]

    first, second = replayed(r, lambda: commit(keys=keys, args=[*args, message, answer]))

    assert first[0] == 1
    assert second[0] == 2
    assert r.llen("chat:{s1}:messages") == 2
    assert int(r.hget(LIMIT, "tokens")) == 30
    assert int(r.hget(LIMIT, "cost")) == 90
