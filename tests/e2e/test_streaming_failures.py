"""Streams that do not complete: the client hangs up, upstream errors, cut or unfinished streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import bearer
from tests.e2e.test_streaming import (
    MODEL,
    EventReader,
    echo,
    generation,
    get_session,
    new_session_id,
    poll,
    post_chat,
    stream_chat,
)
from tests.standin import wire

if TYPE_CHECKING:
    import httpx

    from tests.e2e.test_streaming import Streamed
    from tests.standin import StandinServer

# Long enough that the stream is still going when the test hangs up and checks.
LONG_MESSAGE = " ".join(f"word{n}" for n in range(40))
CHUNK_DELAY = 0.1
RECEIVED_BEFORE_HANGUP = 3
# Well under the time the rest of the stream would take (about 4 s).
CANCEL_DEADLINE = 2.0


def saved_messages(http: httpx.Client, key: str, session_id: str) -> list[dict[str, Any]]:
    """The session's messages, once the turn that ends in the background has been saved."""
    response = poll(lambda: get_session(http, key, session_id), lambda r: r.status_code == 200)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def assert_error_event(streamed: Streamed, status: int) -> dict[str, Any]:
    event = streamed.terminal("error")
    assert set(event) == {"type", "error"}
    error: dict[str, Any] = event["error"]
    assert {"status", "type", "message", "request_id"} <= set(error)
    assert error["status"] == status
    assert error["type"]
    assert error["message"]
    assert error["request_id"] == streamed.response.headers["x-request-id"]
    return error


# ---- the client hangs up -------------------------------------------------------------------


def test_client_hang_up_closes_upstream_and_saves_the_partial_answer(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"chunk_delay": CHUNK_DELAY})
    session_id = new_session_id()
    body = {"message": LONG_MESSAGE, "stream": True, "model": MODEL, "session_id": session_id}
    received: list[str] = []
    with client.stream("POST", "/chat", json=body, headers=bearer(api_key)) as response:
        assert response.status_code == 200
        for event in EventReader(response):
            if not event.is_comment and event.payload["type"] == "delta":
                received.append(event.payload["content"])
            if len(received) == RECEIVED_BEFORE_HANGUP:
                break
    # Leaving the block closed the connection mid-stream.

    record = poll(
        lambda: standin.control.requests(api_key)[-1],
        lambda r: bool(r["cancelled"]),
        seconds=CANCEL_DEADLINE,
    )
    assert record["completed"] is False
    assert generation(standin, api_key, record["generation_id"])["cancelled"] is True

    user, assistant = saved_messages(client, api_key, session_id)
    full = echo(LONG_MESSAGE)
    assert (user["role"], user["content"]) == ("user", LONG_MESSAGE)
    assert assistant["role"] == "assistant"
    assert assistant["interrupted"] is True
    assert "error" not in assistant
    assert assistant["content"].startswith("".join(received))
    assert full.startswith(assistant["content"])
    assert len(assistant["content"]) < len(full)
    assert assistant["generation_id"] == record["generation_id"]

    # The conversation stays coherent: the next turn replays the partial answer.
    after = post_chat(client, api_key, "go on", model=MODEL, session_id=session_id)
    assert after.status_code == 200, after.text
    assert standin.control.requests(api_key)[-1]["body"]["messages"] == [
        {"role": "user", "content": LONG_MESSAGE},
        {"role": "assistant", "content": assistant["content"]},
        {"role": "user", "content": "go on"},
    ]


# ---- upstream errors in the middle of the stream -------------------------------------------


@pytest.mark.parametrize(
    ("form", "code", "status"),
    [
        ("documented", 502, 502),
        ("documented", 429, 429),
        ("documented", 500, 502),
        ("observed", "server_error", 502),
        ("observed", 429, 429),
        ("observed", 500, 502),
    ],
)
def test_mid_stream_error_sends_an_error_event_and_saves_the_partial_answer(
    client: httpx.Client,
    standin: StandinServer,
    api_key: str,
    form: str,
    code: int | str,
    status: int,
) -> None:
    message = "say something long"
    standin.control.script(
        api_key,
        {"error_after": 2, "error_form": form, "error_code": code, "error_message": "it broke"},
        # The same error in a non-streaming answer, for its status mapping.
        {"body_error": {"message": "it broke", "code": code}},
    )
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, message, model=MODEL, session_id=session_id)
    plain = post_chat(client, api_key, message, model=MODEL)

    assert streamed.response.status_code == 200
    assert streamed.deltas == wire.word_pieces(echo(message))[:2]
    error = assert_error_event(streamed, status)
    assert "it broke" in error["message"]
    assert (plain.status_code, plain.json()["error"]["type"]) == (status, error["type"])

    user, assistant = saved_messages(client, api_key, session_id)
    assert user["content"] == message
    assert assistant["content"] == "".join(streamed.deltas)
    assert assistant["error"] == error["message"]
    assert "interrupted" not in assistant
    if form == "observed":
        # This form carries the usage of what was generated.
        upstream = generation(
            standin, api_key, standin.control.requests(api_key)[0]["generation_id"]
        )
        assert assistant["tokens"] == upstream["tokens_prompt"] + upstream["tokens_completion"]


@pytest.mark.parametrize(
    "step",
    [
        {"error_after": 0, "error_form": "documented", "error_code": 502},
        {"error_after": 0, "error_form": "observed", "error_code": 502},
    ],
    ids=["documented", "observed"],
)
def test_error_before_any_text_saves_nothing(
    client: httpx.Client, standin: StandinServer, api_key: str, step: dict[str, Any]
) -> None:
    standin.control.script(api_key, step)
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, "anything", model=MODEL, session_id=session_id)

    assert streamed.response.status_code == 200
    assert streamed.deltas == []
    assert_error_event(streamed, 502)
    assert get_session(client, api_key, session_id).status_code == 404


@pytest.mark.parametrize(
    ("step", "status", "message"),
    [
        (
            {"body_error": {"code": 402, "message": "Insufficient credits"}},
            402,
            "Insufficient credits",
        ),
        (
            {"body_error": {"code": 502, "message": "Provider returned error"}},
            502,
            "Provider returned error",
        ),
        (
            {"status": 200, "raw_body": "<html>oops</html>", "content_type": "text/html"},
            502,
            "no event stream",
        ),
    ],
    ids=["json_error_402", "json_error_502", "html_page"],
)
def test_a_200_that_is_not_a_stream_is_its_own_error_before_the_stream(
    client: httpx.Client,
    standin: StandinServer,
    api_key: str,
    step: dict[str, Any],
    status: int,
    message: str,
) -> None:
    # Asked for a stream, OpenRouter answered 200 with something else: the error it stands
    # for, with its status and message, as a plain JSON error (the stream never began).
    standin.control.script(api_key, step)
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, "anything", model=MODEL, session_id=session_id)

    assert streamed.response.status_code == status
    assert message in streamed.response.json()["error"]["message"]
    assert get_session(client, api_key, session_id).status_code == 404


# ---- streams that end without finishing ----------------------------------------------------


@pytest.mark.parametrize(
    ("step", "pieces_sent"),
    [({"no_done": True}, None), ({"no_finish": True}, None), ({"drop_after": 2}, 2)],
    ids=["no_done", "no_finish", "drop_after"],
)
def test_unfinished_upstream_stream_is_a_failure(
    client: httpx.Client,
    standin: StandinServer,
    api_key: str,
    step: dict[str, Any],
    pieces_sent: int | None,
) -> None:
    message = "finish what you started"
    standin.control.script(api_key, step)
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, message, model=MODEL, session_id=session_id)

    assert streamed.response.status_code == 200
    text = "".join(streamed.deltas)
    assert streamed.deltas == wire.word_pieces(echo(message))[:pieces_sent]
    assert all(payload["type"] != "done" for payload in streamed.payloads)
    error = assert_error_event(streamed, 502)

    user, assistant = saved_messages(client, api_key, session_id)
    assert user["content"] == message
    assert assistant["content"] == text
    assert assistant["error"] == error["message"]
