"""POST /chat through the real API process: the turn contract, history, Redis layout, replicas."""

from __future__ import annotations

import json
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, bearer
from tests.support.redis_state import layout_for, session_tag

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

pytestmark = pytest.mark.stores("standalone", "cluster")

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEED_FIELDS = {"response", "model_used", "session_id", "tokens_used", "timestamp"}
DAY_MS = 24 * 3_600_000
# TTLs are read a moment after the turn set them.
TTL_SLACK_MS = 60_000
OTHER_MODEL = "openai/gpt-4o-mini"
# Redis commands whose counts tell what the hot path ran.
COMMANDS = ("hmget", "lrange", "evalsha", "eval", "script|load")


# ---- helpers shared with the other chat test modules -----------------------------------------


def post_chat(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json=body, headers=bearer(key))


def chat_ok(http: httpx.Client, key: str, **body: Any) -> dict[str, Any]:
    response = post_chat(http, key, **body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def limit_key(key: str) -> str:
    """The key's rate-limit hash: a turn admitted changes it, whatever happens next."""
    return f"chat:limit:{{{owner_id(key, SESSION_SECRET.encode())}}}"


def sent_upstream(standin: StandinServer, key: str) -> list[dict[str, Any]]:
    """The bodies of the chat requests the stand-in received with `key`, oldest first."""
    return [record["body"] for record in standin.control.requests(key)]


def session_messages(http: httpx.Client, key: str, session_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/sessions/{session_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def redis_snapshot(r: redis.Redis, *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every key with its type and whole value (TTLs left out: they move with the clock)."""
    snapshot: dict[str, Any] = {}
    for raw_key in r.scan_iter(count=1000):
        key = raw_key.decode()
        if key in skip:
            continue
        kind = cast("bytes", r.type(raw_key)).decode()
        value: Any
        if kind == "string":
            value = r.get(raw_key)
        elif kind == "hash":
            value = r.hgetall(raw_key)
        elif kind == "list":
            value = r.lrange(raw_key, 0, -1)
        elif kind == "set":
            value = sorted(cast("set[bytes]", r.smembers(raw_key)))
        elif kind == "zset":
            value = r.zrange(raw_key, 0, -1, withscores=True)
        else:
            value = None
        snapshot[key] = (kind, value)
    return snapshot


def session_keys_of(r: redis.Redis, session_id: str) -> list[str]:
    # Braces are literal in Redis glob patterns.
    return sorted(k.decode() for k in r.scan_iter(match=f"chat:{{*:{session_id}}}:*"))


def pttl(r: redis.Redis, name: str) -> int:
    return cast("int", r.pttl(name))


def reads_processed(r: redis.Redis) -> int:
    """Read events the server has handled, across all connections."""
    stats = cast("dict[str, int]", r.info("stats"))
    return stats["total_reads_processed"]


def new_key() -> str:
    """Another well-formed OpenRouter key."""
    return "sk-or-v1-" + secrets.token_hex(32)


# ---- the contract ----------------------------------------------------------------------------


def test_answer_has_seed_fields_plus_usage_as_upstream_reported(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    before = datetime.now(UTC)
    answer = chat_ok(client, api_key, message="hello there")

    assert set(answer) == SEED_FIELDS | {"usage", "finish_reason", "generation_id"}
    [record] = standin.control.requests(api_key)
    # The stand-in's own account of the generation it served.
    generation = httpx.get(
        f"{standin.base_url}/generation",
        params={"id": record["generation_id"]},
        headers=bearer(api_key),
        trust_env=False,
    ).json()["data"]
    assert answer["response"] == "Echo 1: hello there"
    assert answer["model_used"] == generation["model"]
    assert answer["generation_id"] == record["generation_id"]
    assert answer["finish_reason"] == generation["finish_reason"] == "stop"
    total = generation["tokens_prompt"] + generation["tokens_completion"]
    assert answer["usage"] == {
        "prompt_tokens": generation["tokens_prompt"],
        "completion_tokens": generation["tokens_completion"],
        "total_tokens": total,
        "cost": generation["total_cost"],
    }
    assert answer["tokens_used"] == total
    assert SESSION_ID.fullmatch(answer["session_id"])
    stamp = datetime.fromisoformat(answer["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)


@pytest.mark.parametrize("explicit_null", [False, True], ids=["omitted", "null"])
def test_without_session_id_a_new_unguessable_id_is_made(
    client: httpx.Client, api_key: str, explicit_null: bool
) -> None:
    body: dict[str, Any] = {"session_id": None} if explicit_null else {}
    ids = [chat_ok(client, api_key, message=f"hi {n}", **body)["session_id"] for n in range(5)]

    assert len(set(ids)) == len(ids)
    for session_id in ids:
        assert SESSION_ID.fullmatch(session_id)
        # 22 characters of the 64-symbol url-safe alphabet hold 132 bits: room for 128 random
        # bits. Distinct ids show they are not a counter; the length shows the room.
        assert len(session_id) >= 22
        assert len(session_messages(client, api_key, session_id)) == 2


def test_history_is_replayed_in_order_with_system_prompt_first(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    first = chat_ok(client, api_key, message="one", system_prompt="Answer in one word.")
    session_id = first["session_id"]
    second = chat_ok(client, api_key, message="two", session_id=session_id)
    third = chat_ok(client, api_key, message="three", session_id=session_id)

    bodies = sent_upstream(standin, api_key)
    assert [b["messages"] for b in bodies] == [
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "one"},
        ],
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": first["response"]},
            {"role": "user", "content": "two"},
        ],
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": first["response"]},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": second["response"]},
            {"role": "user", "content": "three"},
        ],
    ]
    assert third["response"] == "Echo 3: three"
    assert {first["session_id"], second["session_id"], third["session_id"]} == {session_id}


def test_unknown_session_id_starts_a_session_under_that_id(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    answer = chat_ok(client, api_key, message="start here", session_id="my-own_id-42")

    assert answer["session_id"] == "my-own_id-42"
    assert [b["messages"] for b in sent_upstream(standin, api_key)] == [
        [{"role": "user", "content": "start here"}]
    ]
    assert [m["content"] for m in session_messages(client, api_key, "my-own_id-42")] == [
        "start here",
        answer["response"],
    ]
    # It is the caller's: another key does not see it.
    other = client.get("/sessions/my-own_id-42", headers=bearer(new_key()))
    assert other.status_code == 404


def test_model_and_max_tokens_default_to_the_settings(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    answer = chat_ok(client, api_key, message="defaults please")

    [body] = sent_upstream(standin, api_key)
    # The documented defaults of OPENROUTER_DEFAULT_MODEL and MAX_TOKENS_DEFAULT.
    assert body["model"] == "anthropic/claude-sonnet-4.5"
    assert body["max_tokens"] == 1000
    assert "temperature" not in body
    assert answer["model_used"] == "anthropic/claude-sonnet-4.5"


def test_default_model_and_max_tokens_follow_the_environment(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    web = start_api(OPENROUTER_DEFAULT_MODEL=OTHER_MODEL, MAX_TOKENS_DEFAULT="77")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        answer = chat_ok(http, api_key, message="which model")

    [body] = sent_upstream(standin, api_key)
    assert (body["model"], body["max_tokens"]) == (OTHER_MODEL, 77)
    assert answer["model_used"] == OTHER_MODEL


RETIRED = "anthropic/claude-3.5-sonnet"
SUCCESSOR = "anthropic/claude-sonnet-4.5"


@pytest.mark.parametrize("stream", [False, True])
def test_a_retired_model_id_is_sent_as_its_successor(
    client: httpx.Client, standin: StandinServer, api_key: str, stream: bool
) -> None:
    # The seed's clients name an id OpenRouter no longer lists (the stand-in refuses it too).
    response = post_chat(
        client,
        api_key,
        message="hi",
        model=RETIRED,
        models=[RETIRED, OTHER_MODEL],
        stream=stream,
    )

    assert response.status_code == 200, response.text
    [body] = sent_upstream(standin, api_key)
    assert (body["model"], body["models"]) == (SUCCESSOR, [SUCCESSOR, OTHER_MODEL])
    assert f'"model_used":"{SUCCESSOR}"' in response.text.replace(" ", "")


def test_model_aliases_follow_the_environment(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    web = start_api(MODEL_ALIASES=f"acme/old-model={OTHER_MODEL}")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        renamed = chat_ok(http, api_key, message="hi", model="acme/old-model")
        # The shipped aliases are replaced, not added to: the retired id goes as it came.
        retired = post_chat(http, api_key, message="hi", model=RETIRED)

    assert renamed["model_used"] == OTHER_MODEL
    assert retired.status_code == 400
    assert "is not a valid model ID" in retired.json()["error"]["message"]


def test_a_named_model_the_catalogue_lacks_is_logged_at_start(
    start_api: Callable[..., WebProcess],
) -> None:
    web = start_api(OPENROUTER_DEFAULT_MODEL="acme/gone-1", MODEL_ALIASES="acme/older=acme/gone-2")
    errors = [
        json.loads(line)
        for line in web.logs().splitlines()
        if line.startswith("{") and '"level":"ERROR"' in line
    ]
    named = {(e["model"], e["setting"]) for e in errors if "catalogue" in e["message"]}
    assert named == {
        ("acme/gone-1", "OPENROUTER_DEFAULT_MODEL"),
        ("acme/gone-2", "MODEL_ALIASES (acme/older=acme/gone-2)"),
    }


def test_given_model_temperature_and_max_tokens_are_sent_as_given(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    answer = chat_ok(
        client, api_key, message="a b c d e f", model=OTHER_MODEL, temperature=0.3, max_tokens=5
    )

    [body] = sent_upstream(standin, api_key)
    assert (body["model"], body["temperature"], body["max_tokens"]) == (OTHER_MODEL, 0.3, 5)
    # The stand-in cuts at max_tokens words and says so.
    assert answer["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 5


def test_fields_openrouter_understands_pass_through_untouched(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    extras: dict[str, Any] = {
        "models": [OTHER_MODEL, "anthropic/claude-sonnet-4.5"],
        "provider": {"order": ["Anthropic", "OpenAI"], "allow_fallbacks": True},
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "seed": 42,
    }
    chat_ok(client, api_key, message="extras", **extras)

    [body] = sent_upstream(standin, api_key)
    assert {name: body.get(name) for name in extras} == extras


def test_models_fallback_reports_the_model_that_answered(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"fallback": True})
    answer = chat_ok(client, api_key, message="fall back", models=[OTHER_MODEL])

    [body] = sent_upstream(standin, api_key)
    assert body["model"] != OTHER_MODEL
    assert answer["model_used"] == OTHER_MODEL
    stored = session_messages(client, api_key, answer["session_id"])
    assert stored[1]["model"] == OTHER_MODEL


def test_upstream_gets_the_callers_key_and_attribution_headers(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    web = start_api(APP_URL="https://chat.example.test/app", APP_TITLE="Example Chat")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        chat_ok(http, api_key, message="who am i")

    [record] = standin.control.requests(api_key)
    headers = record["headers"]
    assert headers["authorization"] == f"Bearer {api_key}"
    assert headers["http-referer"] == "https://chat.example.test/app"
    assert headers["x-title"] == "Example Chat"
    # Bodies are relayed as sent: a compressed one would not parse (nor stream).
    assert headers["accept-encoding"] == "identity"


# ---- history cap, replicas, concurrency ------------------------------------------------------


def test_history_cap_drops_oldest_pairs_and_keeps_the_system_prompt(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    web = start_api(MAX_HISTORY_MESSAGES="4")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        answers = [chat_ok(http, api_key, message="m1", system_prompt="Be brief.")]
        session_id = answers[0]["session_id"]
        for n in range(2, 6):
            answers.append(chat_ok(http, api_key, message=f"m{n}", session_id=session_id))
        stored = session_messages(http, api_key, session_id)

    pairs: list[dict[str, str]] = []
    for n, answer in enumerate(answers, start=1):
        pairs += [
            {"role": "user", "content": f"m{n}"},
            {"role": "assistant", "content": answer["response"]},
        ]
    assert [{"role": m["role"], "content": m["content"]} for m in stored] == pairs[-4:]
    # Turn 5 replayed what was stored after turn 4: its last two pairs, system prompt first.
    last = sent_upstream(standin, api_key)[-1]["messages"]
    assert last == [{"role": "system", "content": "Be brief."}, *pairs[4:8], pairs[8]]
    assert redis_client.llen(f"{session_tag(redis_client, session_id)}:messages") == 4


def test_a_session_continues_on_another_replica(
    client: httpx.Client,
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    api_key: str,
) -> None:
    first = chat_ok(client, api_key, message="on replica one", system_prompt="Stay on topic.")
    replica = start_api()
    with httpx.Client(base_url=replica.url, timeout=30) as other:
        second = chat_ok(other, api_key, message="on replica two", session_id=first["session_id"])

    assert second["session_id"] == first["session_id"]
    assert sent_upstream(standin, api_key)[-1]["messages"] == [
        {"role": "system", "content": "Stay on topic."},
        {"role": "user", "content": "on replica one"},
        {"role": "assistant", "content": first["response"]},
        {"role": "user", "content": "on replica two"},
    ]
    assert len(session_messages(client, api_key, first["session_id"])) == 4


def test_concurrent_turns_on_two_replicas_both_land_in_pairs(
    api: WebProcess,
    client: httpx.Client,
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    api_key: str,
) -> None:
    session_id = chat_ok(client, api_key, message="opening")["session_id"]
    replica = start_api()
    # Both upstream calls wait, so both turns are in flight at once.
    standin.control.script(api_key, {"delay": 1.0}, {"delay": 1.0})
    start = threading.Barrier(2)

    def send(url: str, message: str) -> dict[str, Any]:
        with httpx.Client(base_url=url, timeout=30) as http:
            start.wait()
            return chat_ok(http, api_key, message=message, session_id=session_id)

    with ThreadPoolExecutor(max_workers=2) as pool:
        alpha = pool.submit(send, api.url, "alpha")
        beta = pool.submit(send, replica.url, "beta")
        answers = {"alpha": alpha.result()["response"], "beta": beta.result()["response"]}

    # Both read the history before either committed: the turns really overlapped.
    concurrent = sent_upstream(standin, api_key)[1:]
    assert sorted(len(b["messages"]) for b in concurrent) == [3, 3]
    stored = session_messages(client, api_key, session_id)
    assert len(stored) == 6
    assert [m["role"] for m in stored] == ["user", "assistant"] * 3
    for user, assistant in zip(stored[2::2], stored[3::2], strict=True):
        assert assistant["content"] == answers[user["content"]]
        assert user["content"] in assistant["content"]
    assert {m["content"] for m in stored[2::2]} == {"alpha", "beta"}


def test_another_key_naming_the_id_gets_a_session_of_its_own(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    session_id = chat_ok(client, api_key, message="mine")["session_id"]
    owner = owner_id(api_key, SESSION_SECRET.encode())
    before = {
        name: value
        for name, value in redis_snapshot(redis_client).items()
        if name.startswith(f"chat:{{{owner}:")
    }
    intruder = new_key()

    response = post_chat(client, intruder, message="let me in", session_id=session_id)

    assert response.status_code == 200, response.text
    assert response.json()["session_id"] == session_id
    [record] = standin.control.requests(intruder)
    assert record["body"]["messages"] == [{"role": "user", "content": "let me in"}]
    after = redis_snapshot(redis_client)
    assert {name: after[name] for name in before} == before
    assert [m["content"] for m in session_messages(client, intruder, session_id)][::2] == [
        "let me in"
    ]
    assert [m["content"] for m in session_messages(client, api_key, session_id)] == [
        "mine",
        "Echo 1: mine",
    ]


# ---- the Redis layout ------------------------------------------------------------------------


def test_redis_holds_the_documented_layout(
    client: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    answer = chat_ok(client, api_key, message="layout check", system_prompt="Be exact.")
    session_id = answer["session_id"]
    owner = owner_id(api_key, SESSION_SECRET.encode())
    # The session is named by its owner and its id: two keys may both use an id.
    tag = f"chat:{{{owner}:{session_id}}}"

    raw_meta = cast("dict[bytes, bytes]", redis_client.hgetall(f"{tag}:meta"))
    meta = {k.decode(): v.decode() for k, v in raw_meta.items()}
    assert {"owner", "created", "updated", "model", "title", "message_count"} <= set(meta)
    assert meta["model"] == answer["model_used"]
    assert meta["title"] == "layout check"
    assert meta["message_count"] == "2"
    assert meta["system_prompt"] == "Be exact."
    saved_at_ms = datetime.fromisoformat(answer["timestamp"]).timestamp() * 1000
    assert abs(int(meta["updated"]) - saved_at_ms) < 1000
    assert int(meta["created"]) <= int(meta["updated"])

    raw_messages = cast("list[bytes]", redis_client.lrange(f"{tag}:messages", 0, -1))
    user, assistant = (json.loads(raw) for raw in raw_messages)
    assert (user["role"], user["content"]) == ("user", "layout check")
    assert (assistant["role"], assistant["content"]) == ("assistant", answer["response"])
    assert (assistant["model"], assistant["tokens"]) == (
        answer["model_used"],
        answer["tokens_used"],
    )
    for message in (user, assistant):
        assert datetime.fromisoformat(message["timestamp"]).utcoffset() == timedelta(0)

    assert meta["owner"] == owner
    layout = layout_for(redis_client)
    all_sessions = layout.shard(owner).all_sessions
    assert redis_client.zscore(all_sessions, f"{owner}:{session_id}") is not None
    assert redis_client.zscore(layout.owner_sessions(owner), session_id) is not None

    # The key is forwarded upstream and kept nowhere.
    assert api_key not in owner
    for key, (_, value) in redis_snapshot(redis_client).items():
        assert api_key not in key
        assert api_key.encode() not in repr(value).encode()


def test_every_session_key_carries_the_ttl_and_a_turn_refreshes_it(
    client: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    session_id = chat_ok(client, api_key, message="ttl")["session_id"]
    names = session_keys_of(redis_client, session_id)
    tag = session_tag(redis_client, session_id)
    assert {f"{tag}:meta", f"{tag}:messages"} <= set(names)
    # SESSION_CLEANUP_HOURS defaults to 24.
    for name in names:
        assert DAY_MS - TTL_SLACK_MS < pttl(redis_client, name) <= DAY_MS, name
        redis_client.pexpire(name, 60_000)

    chat_ok(client, api_key, message="ttl again", session_id=session_id)

    for name in names:
        assert DAY_MS - TTL_SLACK_MS < pttl(redis_client, name) <= DAY_MS, name


def test_session_ttl_follows_fractional_cleanup_hours(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis, api_key: str
) -> None:
    web = start_api(SESSION_CLEANUP_HOURS="0.5")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        session_id = chat_ok(http, api_key, message="half an hour")["session_id"]

    half_hour_ms = DAY_MS // 48
    for name in session_keys_of(redis_client, session_id):
        assert half_hour_ms - TTL_SLACK_MS < pttl(redis_client, name) <= half_hour_ms, name


@pytest.mark.stores("standalone")  # a cluster's steps: tests/e2e/test_redis_cluster.py
def test_hot_path_costs_at_most_two_redis_round_trips(
    client: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    """Counted with Redis's own counters while this test is the only client at work.

    A round trip needs at least one read event on the server, and a connection cannot send
    its next request before it has the reply to the previous one, so read events bound round
    trips from above: `total_reads_processed` rising by at most 2 (plus our own INFO) proves
    at most two round trips. The command counts show what they were (Redis counts the
    commands a script runs): one EVALSHA that admits the turn (one HMGET of the limit hash)
    and reads the history (HGET of the system prompt, LRANGE), then one EVALSHA (the commit,
    which runs neither HMGET nor LRANGE).
    """
    session_id = chat_ok(client, api_key, message="warm up")["session_id"]
    # The warm-up loaded the scripts and left a fresh pooled connection (no health-check PING).

    def calls() -> dict[str, int]:
        stats = cast("dict[str, dict[str, int]]", redis_client.info("commandstats"))
        return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in COMMANDS}

    def measured(**body: Any) -> tuple[int, dict[str, int]]:
        commands_before = calls()
        reads_before = reads_processed(redis_client)
        chat_ok(client, api_key, **body)
        reads_after = reads_processed(redis_client)
        commands_after = calls()
        # Minus one: the read of our second INFO itself.
        counts = {name: commands_after[name] - commands_before[name] for name in COMMANDS}
        return reads_after - reads_before - 1, counts

    round_trips, counts = measured(message="measured", session_id=session_id)
    assert round_trips <= 2
    assert counts == {"hmget": 1, "lrange": 1, "evalsha": 2, "eval": 0, "script|load": 0}

    # A new session has no history to read: the admission goes alone, then the commit.
    round_trips, counts = measured(message="a new session")
    assert round_trips <= 2
    assert counts == {"hmget": 1, "lrange": 0, "evalsha": 2, "eval": 0, "script|load": 0}


# ---- reasoning models ------------------------------------------------------------------------

REASONING = [
    {
        "type": "reasoning.text",
        "text": "The user greets me; a greeting back is the answer.",
        "format": "anthropic-claude-v1",
        "index": 0,
        "signature": "c2lnbmF0dXJl",
    },
    {
        "type": "reasoning.encrypted",
        "data": "gAAAAABpZ3JlZXRpbmc=",
        "id": "rs_0ab3",
        "format": "openai-responses-v1",
        "index": 1,
    },
]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_details_are_stored_and_sent_back(
    client: httpx.Client, standin: StandinServer, api_key: str, stream: bool
) -> None:
    # OpenRouter asks for a reasoning model's reasoning_details back with its message.
    standin.control.script(api_key, {"reasoning_details": REASONING})
    first = post_chat(client, api_key, message="hello", session_id="thinks", stream=stream)
    assert first.status_code == 200, first.text
    chat_ok(client, api_key, message="and again", session_id="thinks")

    _, again = sent_upstream(standin, api_key)
    assert again["messages"][1]["role"] == "assistant"
    assert again["messages"][1]["reasoning_details"] == REASONING
    session = client.get("/sessions/thinks", headers=bearer(api_key)).json()
    assert session["messages"][1]["reasoning_details"] == REASONING
    assert "reasoning_details" not in session["messages"][3]  # that answer had none
