"""Upstream faults beyond plain error statuses: cut connections, bodies that never end,
malformed and HTML answers, every 5xx. Each gives its documented status (or error event)
within its timeout, and the history stays whole.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import bearer
from tests.e2e.test_streaming import EventReader, poll
from tests.e2e.test_upstream_errors import (
    ATTEMPTS,
    HTML,
    Session,
    assert_history_whole,
    attempts,
    failing_turn,
    one_turn_session,
)
from tests.e2e.test_validation import assert_error
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

TIMEOUT = 2.0
# A loaded machine may be slow to answer, but never this slow: a hang is far longer.
SLACK = 8.0

# What each upstream 5xx becomes (the docs' table): 503 stays 503, 524 (a timeout at the
# provider) is 504, every other one is 502.
FIVE_XX = {s: 502 for s in (500, 501, 502, 505, 506, 507, 508, 510, 511, 520, 521, 522, 523, 529)}
FIVE_XX |= {503: 503, 504: 502, 524: 504}


@pytest.fixture
def session(client: httpx.Client, redis_client: redis.Redis, api_key: str) -> Session:
    return one_turn_session(client, redis_client, api_key)


@pytest.fixture
def timed_api(start_api: Callable[..., WebProcess]) -> WebProcess:
    return start_api(UPSTREAM_TIMEOUT_SECONDS=str(TIMEOUT))


def timed_turn(http: httpx.Client, session: Session, **body: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.post(
        "/chat",
        json={"message": "second question", "session_id": session.session_id, **body},
        headers=bearer(session.key),
    )
    return response, time.monotonic() - started


def stream_events(
    http: httpx.Client, session: Session
) -> tuple[httpx.Response, list[dict[str, Any]], float]:
    started = time.monotonic()
    body = {"message": "second question", "session_id": session.session_id, "stream": True}
    with http.stream("POST", "/chat", json=body, headers=bearer(session.key)) as response:
        events = [e.payload for e in EventReader(response) if not e.is_comment]
    return response, events, time.monotonic() - started


def assert_stream_failed_and_partial_saved(
    http: httpx.Client, session: Session, events: list[dict[str, Any]], status: int
) -> None:
    *deltas, last = events
    assert last["type"] == "error", events
    assert last["error"]["status"] == status
    assert all(event["type"] == "delta" for event in deltas)
    messages = http.get(f"/sessions/{session.session_id}", headers=bearer(session.key)).json()[
        "messages"
    ]
    assert messages[:2] == session.messages
    # The partial answer is saved with its turn, marked with what went wrong: a whole turn.
    assert len(messages) == 4
    assert messages[3]["content"] == "".join(event["content"] for event in deltas)
    assert messages[3]["error"] == last["error"]["message"]


@pytest.mark.parametrize("status", sorted(FIVE_XX))
def test_every_upstream_5xx_has_its_documented_status(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    status: int,
) -> None:
    standin.control.script(session.key, *[{"status": status}] * ATTEMPTS)

    response = failing_turn(client, session)

    assert_error(response, FIVE_XX[status])
    assert response.json()["error"]["upstream_status"] == status
    # Only 502 and 503 are retried: nothing was generated, so nothing can be billed twice.
    assert attempts(standin, session) == (ATTEMPTS if status in (502, 503) else 1)
    assert_history_whole(client, redis_client, session)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, 502),
        (400, 400),
        (401, 401),
        (404, 404),
        (429, 429),
        (500, 502),
        (502, 502),
        (503, 503),
    ],
)
def test_html_error_page_has_the_status_of_its_code(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    status: int,
    expected: int,
) -> None:
    step = {"status": status, "raw_body": HTML, "content_type": "text/html"}
    if status == 429:
        step["headers"] = {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}
    standin.control.script(session.key, *[step] * ATTEMPTS)

    response = failing_turn(client, session)

    assert_error(response, expected)
    assert "<html>" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "Wed, 21 Oct 2099 07:28:00 GMT"
    assert_history_whole(client, redis_client, session)


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": "gen-1", "choices": [{"message": {"content": "half',
        '{"id": "gen-1", "choices": "not a list"}',
        '{"id": "gen-1", "choices": []}',
        "[]",
        "",
    ],
    ids=["truncated", "wrong-type", "no-choices", "array", "empty"],
)
def test_malformed_200_is_502(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    session: Session,
    raw: str,
) -> None:
    standin.control.script(
        session.key, {"status": 200, "raw_body": raw, "content_type": "application/json"}
    )

    response = failing_turn(client, session)

    assert_error(response, 502)
    assert_history_whole(client, redis_client, session)


def test_connection_cut_mid_body_is_502_and_not_retried(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    # A second step would succeed: a retry after the answer began could bill twice.
    standin.control.script(session.key, {"cut_after": 20}, {})

    response = failing_turn(client, session)

    assert_error(response, 502)
    assert attempts(standin, session) == 1
    assert_history_whole(client, redis_client, session)


def test_body_that_never_ends_is_504_within_the_timeout(
    timed_api: WebProcess, redis_client: redis.Redis, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, {"endless": True})
    with httpx.Client(base_url=timed_api.url, timeout=TIMEOUT + SLACK + 10) as http:
        response, elapsed = timed_turn(http, session)

        assert_error(response, 504)
        assert elapsed < TIMEOUT + SLACK
        assert_history_whole(http, redis_client, session)
    # The API hung up on it: the stand-in sees its client leave.
    poll(
        lambda: standin.control.requests(session.key)[-1],
        lambda record: bool(record["cancelled"]),
        seconds=SLACK,
    )


def test_connection_refused_while_streaming_is_a_plain_502(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis, session: Session
) -> None:
    web = start_api(OPENROUTER_BASE_URL=f"http://127.0.0.1:{free_port()}/api/v1")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        response, _ = timed_turn(http, session, stream=True)

        assert_error(response, 502)
        assert response.headers["content-type"].startswith("application/json")
        assert_history_whole(http, redis_client, session)


def test_stream_cut_mid_body_ends_with_an_error_event(
    client: httpx.Client, standin: StandinServer, session: Session
) -> None:
    standin.control.script(session.key, {"cut_after": 2})

    response, events, _ = stream_events(client, session)

    assert response.status_code == 200
    assert len(events) == 3
    assert_stream_failed_and_partial_saved(client, session, events, 502)


def test_stream_that_goes_silent_ends_with_a_504_event_within_the_timeout(
    timed_api: WebProcess, standin: StandinServer, session: Session
) -> None:
    # Two pieces, then nothing at all for an hour: no bytes, no keep-alives.
    standin.control.script(
        session.key, {"pause_after": 2, "pause_seconds": 3600, "keepalive_interval": 0}
    )
    with httpx.Client(base_url=timed_api.url, timeout=TIMEOUT + SLACK + 10) as http:
        response, events, elapsed = stream_events(http, session)

        assert response.status_code == 200
        assert elapsed < TIMEOUT + SLACK
        assert_stream_failed_and_partial_saved(http, session, events, 504)
