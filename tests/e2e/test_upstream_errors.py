"""Upstream failures: the honest status, retries only where safe, and the history left whole."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET
from tests.e2e.test_chat import chat_ok, limit_key, post_chat, redis_snapshot, session_messages
from tests.e2e.test_validation import assert_error
from tests.support.redis_server import free_port
from tests.support.redis_state import session_tag

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

# Failed calls are reported to the worker's usage inbox: the only write they may make, with
# the note that OpenRouter refused the key, after a 401.
USAGE_INBOX = "chat:usage:inbox"
# UPSTREAM_RETRIES defaults to 2: three attempts in all.
ATTEMPTS = 3
HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass
class Session:
    """A session with one good turn, and what it looked like before the failing turn."""

    key: str
    session_id: str
    messages: list[dict[str, Any]]
    redis_state: dict[str, Any]


def limit_keys(key: str) -> frozenset[str]:
    """What a failed turn writes: its usage record, its admission and settle, and the note
    that OpenRouter refused the key, after a 401."""
    owner = owner_id(key, SESSION_SECRET.encode())
    return frozenset(
        {USAGE_INBOX, limit_key(key), f"{limit_key(key)}:holds", f"chat:refused:{{{owner}}}"}
    )


def one_turn_session(http: httpx.Client, redis_client: redis.Redis, api_key: str) -> Session:
    session_id = chat_ok(http, api_key, message="first question")["session_id"]
    return Session(
        key=api_key,
        session_id=session_id,
        messages=session_messages(http, api_key, session_id),
        redis_state=redis_snapshot(redis_client, skip=limit_keys(api_key)),
    )


@pytest.fixture
def session(client: httpx.Client, redis_client: redis.Redis, api_key: str) -> Session:
    return one_turn_session(client, redis_client, api_key)


def failing_turn(http: httpx.Client, session: Session, *, stream: bool = False) -> httpx.Response:
    """The session's second turn; streamed, its errors before the stream are JSON as well."""
    return post_chat(
        http, session.key, message="second question", session_id=session.session_id, stream=stream
    )


def assert_history_whole(http: httpx.Client, redis_client: redis.Redis, session: Session) -> None:
    """Exactly the first pair is stored, and no other key changed."""
    assert len(session.messages) == 2
    assert session_messages(http, session.key, session.session_id) == session.messages
    # The usage inbox records the failure, and the failed turn counted against the limit.
    after = redis_snapshot(redis_client, skip=limit_keys(session.key))
    assert after == session.redis_state


def attempts(standin: StandinServer, session: Session) -> int:
    """Upstream requests of the failing turn (the first record is the good turn)."""
    return len(standin.control.requests(session.key)) - 1


# ---- statuses passed through or mapped --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Invalid value for top_p: must be between 0 and 1"),
        (401, "User not found."),
        (402, "Insufficient credits. Add more using https://openrouter.ai/credits"),
        (404, "No endpoints found for openai/gpt-4o-mini."),
    ],
)
def test_client_errors_pass_through_with_openrouters_message(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    status: int,
    message: str,
) -> None:
    standin.control.script(session.key, {"status": status, "message": message})

    response = failing_turn(client, session)

    assert_error(response, status)
    error = response.json()["error"]
    assert message in error["message"]
    assert error["upstream_status"] == status
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def test_429_passes_through_with_retry_after_and_is_not_retried(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    standin.control.script(
        session.key,
        {"status": 429, "message": "Rate limit exceeded", "headers": {"Retry-After": "7"}},
    )

    response = failing_turn(client, session)

    assert_error(response, 429)
    assert response.headers["retry-after"] == "7"
    assert "Rate limit exceeded" in response.json()["error"]["message"]
    assert response.json()["error"]["upstream_status"] == 429
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def _in_a_minute_ms() -> str:
    return str(int(time.time() * 1000) + 60_000)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # OpenRouter's own limits: the reset only in the body, epoch ms, as a string.
        (
            {
                "status": 429,
                "message": "Rate limit exceeded: free-models-per-min.",
                "metadata": {
                    "headers": {
                        "X-RateLimit-Limit": "8",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": "in-a-minute",
                    },
                    "provider_name": None,
                },
            },
            range(58, 61),
        ),
        # A provider's 429, its Retry-After mirrored in the body.
        (
            {
                "status": 429,
                "message": "Provider returned error",
                "metadata": {"retry_after_seconds": 17, "headers": {"Retry-After": "17"}},
            },
            range(17, 18),
        ),
        # The newer availability error: no `code`, `retry_after` in `availability`.
        (
            {
                "status": 429,
                "content_type": "application/json",
                "raw_body": json.dumps(
                    {
                        "error": {
                            "message": "All providers are at capacity. Retry after 40 seconds.",
                            "error_type": "rate_limit_exceeded",
                            "http_status": 429,
                            "availability": {"code": "capacity_exhausted", "retry_after": 40},
                        }
                    }
                ),
            },
            range(40, 41),
        ),
    ],
)
def test_a_429_whose_reset_is_in_its_body_gets_retry_after(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    step: dict[str, Any],
    expected: range,
) -> None:
    if "metadata" in step and "X-RateLimit-Reset" in step["metadata"]["headers"]:
        step["metadata"]["headers"]["X-RateLimit-Reset"] = _in_a_minute_ms()
    standin.control.script(session.key, step)

    response = failing_turn(client, session)

    assert_error(response, 429)
    assert int(response.headers["retry-after"]) in expected
    assert response.json()["error"]["upstream_status"] == 429
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def test_503_with_a_long_retry_after_stays_503_at_once(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, {"status": 503, "headers": {"Retry-After": "120"}})

    response = failing_turn(client, session)

    assert_error(response, 503)
    assert response.headers["retry-after"] == "120"
    # Too long to wait for here: the client is told when to come back instead.
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def test_retries_stop_after_upstream_retries(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, *[{"status": 503}] * (ATTEMPTS + 1))

    response = failing_turn(client, session)

    assert_error(response, 503)
    assert attempts(standin, session) == ATTEMPTS
    assert_history_whole(client, redis_client, session)


def test_persistent_502_is_502_after_all_attempts(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, *[{"status": 502}] * ATTEMPTS)

    response = failing_turn(client, session)

    assert_error(response, 502)
    assert attempts(standin, session) == ATTEMPTS
    assert_history_whole(client, redis_client, session)


# ---- transport failures ----------------------------------------------------------------------


def test_upstream_slower_than_the_timeout_is_504(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
) -> None:
    web = start_api(UPSTREAM_TIMEOUT_SECONDS="1")
    standin.control.script(session.key, {"delay": 5})
    with httpx.Client(base_url=web.url, timeout=30) as http:
        response = failing_turn(http, session)

        assert_error(response, 504)
        assert_history_whole(http, redis_client, session)
    assert attempts(standin, session) == 1


def test_upstream_not_listening_is_502(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis, session: Session
) -> None:
    # Nothing listens on a port just found free.
    web = start_api(OPENROUTER_BASE_URL=f"http://127.0.0.1:{free_port()}/api/v1")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        response = failing_turn(http, session)

        assert_error(response, 502)
        assert_history_whole(http, redis_client, session)


# ---- errors inside a 200 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": 402, "message": "Insufficient credits"}, 402),
        ({"code": 429, "message": "Rate limit exceeded"}, 429),
        ({"code": 502, "message": "Provider returned error"}, 502),
        ({"code": 401, "message": "User not found."}, 401),
        ({"code": 400, "message": "Bad input"}, 400),
        ({"code": "server_error", "message": "Internal"}, 502),
        ({"message": "no code at all"}, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_200_with_an_error_body_is_that_error(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    error: dict[str, Any],
    expected: int,
    stream: bool,
) -> None:
    standin.control.script(session.key, {"body_error": error})

    # A stream request answered with such a body is that error too, before the stream begins.
    response = failing_turn(client, session, stream=stream)

    assert_error(response, expected)
    assert error["message"] in response.json()["error"]["message"]
    assert_history_whole(client, redis_client, session)


def test_200_whose_choice_failed_is_an_error_and_not_saved(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    error = {"code": 502, "message": "Provider disconnected"}
    standin.control.script(session.key, {"choice_error": error})

    response = failing_turn(client, session)

    assert_error(response, 502)
    assert "Provider disconnected" in response.json()["error"]["message"]
    assert_history_whole(client, redis_client, session)


# ---- retries that succeed --------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        {"status": 502},
        {"status": 503},
        {"status": 503, "headers": {"Retry-After": "0"}},
        {"status": 503, "headers": {"Retry-After": "1"}},
        {"status": 408},
    ],
    ids=["502", "503", "503 retry-after 0", "503 retry-after 1", "408"],
)
def test_retryable_failure_then_success_is_200(
    client: httpx.Client, standin: StandinServer, session: Session, step: dict[str, Any]
) -> None:
    standin.control.script(session.key, step)

    response = failing_turn(client, session)

    assert response.status_code == 200, response.text
    assert response.json()["response"] == "Echo 2: second question"
    assert attempts(standin, session) == 2
    assert len(session_messages(client, session.key, session.session_id)) == 4


@pytest.mark.parametrize("status", [400, 429])
def test_non_retryable_failure_is_tried_once(
    client: httpx.Client, standin: StandinServer, session: Session, status: int
) -> None:
    # A second step would succeed: a retry would turn the failure into a 200.
    standin.control.script(session.key, {"status": status}, {})

    response = failing_turn(client, session)

    assert_error(response, status)
    assert attempts(standin, session) == 1


def test_error_message_never_carries_the_key(
    client: httpx.Client, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, {"status": 400, "message": f"bad key {session.key}"})

    response = failing_turn(client, session)

    assert_error(response, 400)
    assert session.key not in response.text
    assert session.key not in response.headers.get("retry-after", "")


def test_a_key_cut_by_the_message_limit_leaves_none_of_it(
    client: httpx.Client, standin: StandinServer, session: Session
) -> None:
    # The provider's raw error echoes the key where the 500-character cut goes through it.
    raw = "x" * 480 + f" key={session.key} was refused"
    standin.control.script(
        session.key, {"status": 400, "message": "Provider returned error", "metadata": {"raw": raw}}
    )

    response = failing_turn(client, session)

    assert_error(response, 400)
    assert "[redacted]" in response.json()["error"]["message"]
    assert session.key[:12] not in response.text


def test_an_error_code_of_unicode_digits_is_not_a_500(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    # "²".isdigit() is true, and int("²") raises.
    body = '{"error": {"code": "\u00b2", "message": "odd provider"}}'
    standin.control.script(session.key, {"status": 400, "raw_body": body})

    response = failing_turn(client, session)

    assert_error(response, 400)
    assert "odd provider" in response.json()["error"]["message"]
    assert_history_whole(client, redis_client, session)


def test_a_retry_after_that_is_not_a_number_of_seconds_is_ignored(
    client: httpx.Client, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, {"status": 503, "headers": {"Retry-After": "nan"}})

    response = failing_turn(client, session)

    # Retried after the usual backoff, once, and the retry answered.
    assert response.status_code == 200, response.text
    assert attempts(standin, session) == 2


# ---- connections lost, and none to be had ----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_connection_lost_after_the_request_is_never_sent_again(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    stream: bool,
) -> None:
    # OpenRouter received the request whole, then the connection died: it may be billed.
    standin.control.script(session.key, {"drop": True}, {"drop": True}, {"drop": True})
    response = failing_turn(client, session, stream=stream)

    assert_error(response, 502)
    assert response.json()["error"]["type"] == "upstream_disconnected"
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def test_every_upstream_connection_in_use_is_503_upstream_busy(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
) -> None:
    web = start_api(UPSTREAM_MAX_CONNECTIONS="1", UPSTREAM_CONNECT_TIMEOUT_SECONDS="0.3")
    standin.control.script(session.key, {"delay": 1.5})
    with httpx.Client(base_url=web.url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post_chat, http, session.key, message="a slow one")
        time.sleep(0.5)  # the slow turn holds the only connection
        busy = failing_turn(http, session)
        assert slow.result().status_code == 200

        assert_error(busy, 503)
        assert busy.json()["error"]["type"] == "upstream_busy"
        assert busy.headers["retry-after"] == "1"
        # The connection is free again once the slow turn is done.
        assert post_chat(http, session.key, message="now there is room").status_code == 200
    # The busy turn never reached OpenRouter: the good turn, the slow one, the last one.
    assert len(standin.control.requests(session.key)) == 3


def test_upstream_requests_ask_for_an_identity_encoding(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    chat_ok(client, api_key, message="hello")
    post_chat(client, api_key, message="streamed", stream=True)

    records = standin.control.requests(api_key)
    assert [r["headers"].get("accept-encoding") for r in records] == ["identity", "identity"]


# ---- usage figures that cannot be right ------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # A count past 64 bits once failed the commit after its writes, and jammed the worker.
        (
            {"prompt_tokens": 2**70, "completion_tokens": 5, "total_tokens": 2**70 + 5},
            {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5, "cost": None},
        ),
        (
            {"prompt_tokens": -3, "completion_tokens": 4, "total_tokens": 1, "cost": -0.5},
            {"prompt_tokens": 0, "completion_tokens": 4, "total_tokens": 4, "cost": None},
        ),
        (
            {"prompt_tokens": 7.5, "completion_tokens": "6", "total_tokens": 10**9, "cost": 1e6},
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": None},
        ),
        (
            {"prompt_tokens": True, "completion_tokens": 2, "total_tokens": 9, "cost": 0.002},
            {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 9, "cost": 0.002},
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_usage_figures_that_cannot_be_right_count_as_unknown(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    usage: dict[str, Any],
    expected: dict[str, Any],
    stream: bool,
) -> None:
    standin.control.script(api_key, {"usage": usage, "content": "an answer"})
    response = post_chat(client, api_key, message="count me", session_id="odd", stream=stream)

    assert response.status_code == 200, response.text
    if stream:
        done = [line for line in response.text.splitlines() if '"type":"done"' in line]
        answer = json.loads(done[0].removeprefix("data: "))
    else:
        answer = response.json()
    assert answer["usage"] == expected
    assert answer["tokens_used"] == expected["total_tokens"]
    # The whole turn is saved, and its usage event holds only figures that can be right.
    assert redis_client.llen(f"{session_tag(redis_client, 'odd')}:messages") == 2
    inbox: list[bytes] = redis_client.lrange(USAGE_INBOX, 0, -1)  # type: ignore[assignment]
    [event] = [json.loads(raw) for raw in inbox]
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert event.get(name, 0) == expected[name]
    assert event.get("cost", 0.0) == (expected["cost"] or 0.0)
