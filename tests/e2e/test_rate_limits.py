"""Per-owner rate limits through the real API processes: turns per minute, tokens per day."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.store.client import lua_script
from app.store.limits import ADMISSION_LUA, admission_keys
from tests.conftest import bearer
from tests.e2e.test_chat import limit_key
from tests.support.redis_server import RedisServer
from tests.support.redis_state import inbox_events

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

pytestmark = pytest.mark.stores("standalone", "cluster")

TURN_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
TOKEN_HEADERS = (
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def turn(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json={"message": "hi", **body}, headers=bearer(key))


def header(response: httpx.Response, name: str) -> int:
    return int(response.headers[name])


def turns_until_refused(
    http: httpx.Client,
    key: str,
    most: int,
    send: Callable[[httpx.Client, str], httpx.Response] = turn,
) -> list[httpx.Response]:
    """Turns one after another until the first 429 (or `most` turns)."""
    answers: list[httpx.Response] = []
    while len(answers) < most:
        answers.append(send(http, key))
        if answers[-1].status_code != 200:
            break
    return answers


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def api_limited_to(start_api: Callable[..., WebProcess], per_minute: int) -> Iterator[httpx.Client]:
    web = start_api(RATE_LIMIT_PER_MINUTE=str(per_minute))
    with httpx.Client(base_url=web.url, timeout=30) as http:
        yield http


@pytest.fixture
def limited(start_api: Callable[..., WebProcess]) -> Iterator[httpx.Client]:
    """20 turns per minute: a burst of 20, then one turn back every 3 seconds."""
    yield from api_limited_to(start_api, 20)


def test_turns_beyond_the_limit_get_429_with_headers_and_a_right_retry_after(
    limited: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    started = time.monotonic()
    answers = turns_until_refused(limited, api_key, most=60)
    elapsed = time.monotonic() - started
    *admitted, refused = answers

    # The burst of 20, and at most the turns that came back while it ran (one per 3 s).
    assert 20 <= len(admitted) <= 20 + elapsed / 3 + 1
    for answer in admitted:
        assert answer.status_code == 200, answer.text
        assert header(answer, "x-ratelimit-limit") == 20
        assert 0 <= header(answer, "x-ratelimit-remaining") < 20
        assert 1 <= header(answer, "x-ratelimit-reset") <= 60
    assert header(admitted[0], "x-ratelimit-remaining") == 19
    assert header(admitted[0], "x-ratelimit-reset") == 3

    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/json")
    error = refused.json()["error"]
    assert error["type"] == "rate_limited"
    assert "20 turns per minute" in error["message"]
    assert "upstream_status" not in error or error["upstream_status"] is None
    assert header(refused, "x-ratelimit-limit") == 20
    assert header(refused, "x-ratelimit-remaining") == 0
    retry_after = header(refused, "retry-after")
    assert 1 <= retry_after <= 3
    # Refused turns never reach OpenRouter.
    assert len(standin.control.requests(api_key)) == len(admitted)

    # Retry-After is enough: waiting it out lets the next turn through.
    time.sleep(retry_after)
    again = turn(limited, api_key)
    assert again.status_code == 200, again.text
    assert header(again, "x-ratelimit-remaining") <= 1


@pytest.fixture
def one_per_minute(start_api: Callable[..., WebProcess]) -> Iterator[httpx.Client]:
    yield from api_limited_to(start_api, 1)


def test_a_refused_turn_changes_nothing(
    one_per_minute: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    assert turn(one_per_minute, api_key).status_code == 200
    state = redis_client.hgetall(limit_key(api_key))

    refused = [turn(one_per_minute, api_key) for _ in range(5)]

    # Hammering while refused does not push the next admission further away.
    assert [answer.status_code for answer in refused] == [429] * 5
    assert redis_client.hgetall(limit_key(api_key)) == state
    retry_after = [header(answer, "retry-after") for answer in refused]
    assert retry_after == sorted(retry_after, reverse=True)


def test_streaming_turns_count_and_are_refused_before_the_stream(
    one_per_minute: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    first = turn(one_per_minute, api_key, stream=True)
    second = turn(one_per_minute, api_key, stream=True)

    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/event-stream")
    assert '"type":"done"' in first.text
    assert header(first, "x-ratelimit-limit") == 1
    assert header(first, "x-ratelimit-remaining") == 0
    assert second.status_code == 429
    assert second.headers["content-type"].startswith("application/json")
    assert second.json()["error"]["type"] == "rate_limited"
    assert 1 <= header(second, "retry-after") <= 60
    assert len(standin.control.requests(api_key)) == 1


def test_a_turn_that_fails_upstream_counts_and_carries_the_headers(
    limited: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"status": 400, "message": "bad model parameters"})

    failed = turn(limited, api_key)

    assert failed.status_code == 400
    assert failed.json()["error"]["type"] == "upstream_bad_request"
    assert header(failed, "x-ratelimit-remaining") == 19
    assert header(turn(limited, api_key), "x-ratelimit-remaining") == 18


def test_session_routes_neither_count_nor_carry_the_headers(
    start_api: Callable[..., WebProcess], api_key: str
) -> None:
    web = start_api(RATE_LIMIT_PER_MINUTE="2")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        session_id = turn(http, api_key).json()["session_id"]
        reads = [
            http.get("/sessions", headers=bearer(api_key)),
            http.get(f"/sessions/{session_id}", headers=bearer(api_key)),
            http.get("/sessions", headers=bearer(api_key)),
        ]
        second = turn(http, api_key, session_id=session_id)
        third = turn(http, api_key, session_id=session_id)
        deleted = http.delete(f"/sessions/{session_id}", headers=bearer(api_key))

    for read in reads:
        assert read.status_code == 200, read.text
        assert not set(TURN_HEADERS) & set(read.headers)
    assert second.status_code == 200
    assert header(second, "x-ratelimit-remaining") == 0
    assert third.status_code == 429
    assert deleted.status_code == 204


def test_the_limit_holds_across_two_replicas(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    replicas = [start_api(RATE_LIMIT_PER_MINUTE="3"), start_api(RATE_LIMIT_PER_MINUTE="3")]
    clients = [httpx.Client(base_url=web.url, timeout=30) for web in replicas]
    try:
        started = time.monotonic()
        answers = [turn(clients[n % 2], api_key) for n in range(8)]
        elapsed = time.monotonic() - started
    finally:
        for http in clients:
            http.close()

    statuses = [answer.status_code for answer in answers]
    admitted = statuses.count(200)
    # One turn comes back every 20 s; two replicas counting apart would admit 6.
    assert 3 <= admitted <= 3 + int(elapsed // 20)
    assert set(statuses) == {200, 429}
    assert {header(answer, "x-ratelimit-limit") for answer in answers} == {3}
    # Each replica refused turns after the other had used the allowance.
    assert 429 in statuses[0::2]
    assert 429 in statuses[1::2]
    assert len(standin.control.requests(api_key)) == admitted


def turns_under_a_token_limit_of_30(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    key: str,
    send: Callable[[httpx.Client, str], httpx.Response],
) -> list[httpx.Response]:
    """Turns of six-word answers on an API allowing 30 tokens a day, until the first 429."""
    web = start_api(RATE_LIMIT_PER_MINUTE="0", TOKEN_LIMIT_PER_DAY="30")
    standin.control.script(key, *[{"content": "one two three four five six"}] * 10)
    with httpx.Client(base_url=web.url, timeout=30) as http:
        return turns_until_refused(http, key, most=10, send=send)


def test_the_daily_token_limit_refuses_turns_until_the_utc_day_ends(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    *admitted, refused = turns_under_a_token_limit_of_30(start_api, standin, api_key, turn)

    used = 0
    for answer in admitted:
        assert answer.status_code == 200, answer.text
        # Admitted while under the limit; the headers count the answer's tokens too.
        assert used < 30
        used += answer.json()["tokens_used"]
        assert header(answer, "x-ratelimit-limit-tokens") == 30
        assert header(answer, "x-ratelimit-remaining-tokens") == max(30 - used, 0)
        # Turns per minute are unlimited, so their headers are absent.
        assert not set(TURN_HEADERS) & set(answer.headers)
    assert used >= 30

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limited"
    assert "token limit" in error["message"]
    assert header(refused, "x-ratelimit-remaining-tokens") == 0
    midnight = seconds_to_utc_midnight()
    assert midnight - 5 <= header(refused, "retry-after") <= midnight + 5
    assert midnight - 5 <= header(refused, "x-ratelimit-reset-tokens") <= midnight + 5
    assert len(standin.control.requests(api_key)) == len(admitted)

    r: Any = redis_client  # redis-py's sync stubs type every reply as maybe-awaitable
    state = r.hgetall(limit_key(api_key))
    assert int(state[b"tokens"]) == used
    assert int(state[b"day"]) == int(time.time() // 86400)
    assert 0 < r.pttl(limit_key(api_key)) <= midnight * 1000 + 5000


def test_the_default_is_60_turns_per_minute(client: httpx.Client, api_key: str) -> None:
    answer = turn(client, api_key)

    assert answer.status_code == 200
    assert header(answer, "x-ratelimit-limit") == 60
    assert header(answer, "x-ratelimit-remaining") == 59
    assert not set(TOKEN_HEADERS) & set(answer.headers)


def test_zero_disables_the_limit(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis, api_key: str
) -> None:
    web = start_api(RATE_LIMIT_PER_MINUTE="0")
    with (
        httpx.Client(base_url=web.url, timeout=30) as http,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda _: turn(http, api_key), range(70)))

    assert [answer.status_code for answer in answers] == [200] * 70
    for answer in answers:
        assert not set(TURN_HEADERS + TOKEN_HEADERS) & set(answer.headers)
    assert list(redis_client.scan_iter("chat:limit:*")) == []


@pytest.mark.stores("standalone")  # its own Redis, stopped
def test_redis_down_is_a_503_not_a_bypass(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    with RedisServer() as own:
        web = start_api(REDIS_URL=own.url, RATE_LIMIT_PER_MINUTE="5")
        with httpx.Client(base_url=web.url, timeout=30) as http:
            session_id = turn(http, api_key).json()["session_id"]
            own.stop()
            answers = [turn(http, api_key), turn(http, api_key, session_id=session_id)]

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["type"] == "storage_unavailable"
        assert answer.headers["retry-after"] == "1"
    assert len(standin.control.requests(api_key)) == 1


def test_the_limit_state_is_two_tagged_keys_per_owner(
    limited: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    turn(limited, api_key)

    r: Any = redis_client
    names = sorted(name.decode() for name in r.scan_iter("chat:limit:*"))
    limit, holds = limit_key(api_key), f"{limit_key(api_key)}:holds"
    assert names == [limit, holds]
    assert r.type(limit) == b"hash"
    assert float(r.hget(limit, "tat")) > time.time() * 1000
    # The bucket is full again 3 s after one turn: the state lives no longer than that.
    assert 0 < r.pttl(limit) <= 3000
    # The settled turn stays marked a while, so that a replay of its writes changes nothing.
    assert r.type(holds) == b"zset"
    [(_, mark)] = r.zrange(holds, 0, -1, withscores=True)
    assert mark < 0
    assert 0 < r.pttl(holds) <= 15 * 60_000


def test_a_redis_that_lost_its_scripts_still_limits(
    one_per_minute: httpx.Client, redis_client: redis.Redis, api_key: str
) -> None:
    session_id = turn(one_per_minute, api_key).json()["session_id"]
    # As after a Redis restart: the admission in the history pipeline meets NOSCRIPT.
    redis_client.script_flush()

    again = turn(one_per_minute, api_key, session_id=session_id)

    assert again.status_code == 429, again.text
    assert header(again, "x-ratelimit-limit") == 1
    assert 1 <= header(again, "retry-after") <= 60


@pytest.mark.stores("standalone")  # the script's logic, alike on both
@pytest.mark.parametrize("per_minute", [1, 7, 13, 60, 1000])
def test_the_admission_script_allows_exactly_a_burst_of_the_limit(
    redis_client: redis.Redis, per_minute: int
) -> None:
    """Any rate, even one whose interval is not a whole number of ms (60000 / 7)."""
    admit = redis_client.register_script(lua_script("admit_turn.lua", after=ADMISSION_LUA))
    script_keys = admission_keys("burst-test", "192.0.2.1")

    replies = [
        admit(keys=script_keys, args=[per_minute, 0, 0, f"turn-{n}", 0, 0, 0, 0, 0, 0, 0])
        for n in range(per_minute + 1)
    ]

    *admitted, refused = replies
    # A refill may land while a long burst runs: then one more turn is admitted.
    assert all(reply[0] == 1 for reply in admitted)
    assert [reply[1] for reply in admitted[:2]] == [per_minute - 1, per_minute - 2][:per_minute]
    if refused[0] == 0:
        assert refused[1] == 0
        assert 0 < refused[3] <= 60_000 / per_minute + 1
    else:
        assert per_minute >= 60


def completion(
    http: httpx.Client, key: str, session: str | None = None, **body: Any
) -> httpx.Response:
    """A turn through the OpenAI-compatible route, with memory when `session` is given."""
    headers = bearer(key) | ({"X-Session-Id": session} if session else {})
    return http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], **body},
        headers=headers,
    )


@pytest.mark.parametrize("session", [None, "new"])
def test_openai_route_turns_share_the_limit_of_chat_turns(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str, session: str | None
) -> None:
    with httpx.Client(base_url=start_api(RATE_LIMIT_PER_MINUTE="3").url, timeout=30) as http:
        first = turn(http, api_key)
        answers = [completion(http, api_key, session) for _ in range(3)]

    assert first.status_code == 200
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [header(a, "x-ratelimit-remaining") for a in answers] == [1, 0, 0]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"  # OpenAI's error shape on /v1
    assert header(refused, "retry-after") >= 1
    assert len(standin.control.requests(api_key)) == 3


def test_pass_through_turns_count_against_the_daily_token_limit(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
) -> None:
    *admitted, refused = turns_under_a_token_limit_of_30(start_api, standin, api_key, completion)

    used = sum(answer.json()["usage"]["total_tokens"] for answer in admitted)
    assert used >= 30
    assert header(admitted[-1], "x-ratelimit-remaining-tokens") == max(30 - used, 0)
    assert refused.status_code == 429
    assert "token limit" in refused.json()["error"]["message"]
    r: Any = redis_client
    assert int(r.hget(limit_key(api_key), "tokens")) == used
    # Nothing of a session was written: only the usage events, for the worker.
    assert not r.keys("chat:{*")
    assert len(inbox_events(r)) == len(admitted)
