"""Streaming turns over SSE: framing, the done event, history, keep-alives, early errors."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

from app.turns.callers import owner_id
from app.upstream.sse import sse_batches
from tests.conftest import SESSION_SECRET, base_env, bearer
from tests.standin import wire
from tests.support.processes import WebProcess
from tests.support.redis_server import free_port
from tests.support.redis_state import inbox_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    import redis

    from tests.standin import StandinServer

pytestmark = pytest.mark.stores("standalone", "cluster")

T = TypeVar("T")

MODEL = "openai/gpt-4o-mini"
# The keep-alive interval of the module's second API: short, so tests stay fast.
KEEPALIVE_SECONDS = 0.5
# Silences several keep-alive intervals long; only a lower bound on their count is asserted.
SILENCE_SECONDS = 2.0


# ---- helpers shared with test_streaming_failures -------------------------------------------


def new_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def echo(message: str, user_messages: int = 1) -> str:
    """The stand-in's deterministic default reply."""
    return f"Echo {user_messages}: {message}"


@dataclass(frozen=True)
class Event:
    """One SSE event of our stream: a single line, without its blank line."""

    line: bytes

    @property
    def is_comment(self) -> bool:
        return self.line.startswith(b":")

    @property
    def payload(self) -> dict[str, Any]:
        assert self.line.startswith(b"data: {"), self.line
        parsed: dict[str, Any] = json.loads(self.line.removeprefix(b"data: "))
        return parsed


class EventReader:
    """Reads our SSE stream from the raw bytes, checking the framing of every event."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_raw()
        self._buffer = b""
        self.raw = b""

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while (end := self._buffer.find(b"\n\n")) < 0:
            chunk = next(self._chunks, None)
            if chunk is None:
                assert not self._buffer, f"the stream ended inside an event: {self._buffer!r}"
                raise StopIteration
            self.raw += chunk
            self._buffer += chunk
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        # Exactly one line per event: no empty event, no second line, no CR.
        assert line, "an empty event (three newlines in a row)"
        assert b"\n" not in line and b"\r" not in line, line
        event = Event(line)
        if not event.is_comment:
            assert event.payload["type"] in {"delta", "done", "error"}, line
        return event


@dataclass
class Streamed:
    """A finished POST /chat with `stream: true`: the response and what it carried."""

    response: httpx.Response
    events: list[Event] = field(default_factory=list)
    raw: bytes = b""

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [event.payload for event in self.events if not event.is_comment]

    @property
    def deltas(self) -> list[str]:
        contents = []
        for payload in self.payloads:
            if payload["type"] == "delta":
                assert set(payload) == {"type", "content"}, payload
                contents.append(payload["content"])
        return contents

    @property
    def last(self) -> dict[str, Any]:
        return self.payloads[-1]

    def terminal(self, kind: str) -> dict[str, Any]:
        """The one done or error event, which must be the last event of the stream."""
        terminals = [p for p in self.payloads if p["type"] != "delta"]
        assert [p["type"] for p in terminals] == [kind], terminals
        assert self.events[-1].payload == terminals[0], "events after the terminal event"
        return terminals[0]


def stream_chat(http: httpx.Client, key: str, message: str, **fields: Any) -> Streamed:
    """POST /chat with `stream: true`, read to the end; a non-200 answer is read as is."""
    body = {"message": message, "stream": True, **fields}
    with http.stream("POST", "/chat", json=body, headers=bearer(key)) as response:
        if response.status_code != 200:
            response.read()
            return Streamed(response, raw=response.content)
        reader = EventReader(response)
        events = list(reader)
        return Streamed(response, events, reader.raw)


def post_chat(http: httpx.Client, key: str, message: str, **fields: Any) -> httpx.Response:
    return http.post("/chat", json={"message": message, **fields}, headers=bearer(key))


def get_session(http: httpx.Client, key: str, session_id: str) -> httpx.Response:
    return http.get(f"/sessions/{session_id}", headers=bearer(key))


def generation(standin: StandinServer, key: str, generation_id: str) -> dict[str, Any]:
    """What the stand-in reports for one generation, as OpenRouter's /generation does."""
    response = httpx.get(
        f"{standin.base_url}/generation",
        params={"id": generation_id},
        headers=bearer(key),
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def standin_usage(standin: StandinServer, key: str, generation_id: str) -> dict[str, Any]:
    """The usage the stand-in sent for a generation, in our `usage` shape."""
    data = generation(standin, key, generation_id)
    return {
        "prompt_tokens": data["tokens_prompt"],
        "completion_tokens": data["tokens_completion"],
        "total_tokens": data["tokens_prompt"] + data["tokens_completion"],
        "cost": data["total_cost"],
    }


def poll(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 3.0) -> T:
    """`read()` until `done` holds; the last value fails the test when the deadline passes."""
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value):
        assert time.monotonic() < deadline, f"still not there after {seconds} s: {value}"
        time.sleep(0.02)
        value = read()
    return value


def error_without_id(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body["error"].items() if name != "request_id"}


# ---- a completed stream --------------------------------------------------------------------


def test_stream_headers_and_one_line_events(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    # Upstream keep-alives before the first token must not become events of ours.
    standin.control.script(api_key, {"keepalives": 3})
    streamed = stream_chat(client, api_key, "hello there", model=MODEL)

    response = streamed.response
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    # The reader consumed the body event by event: rebuilt, it is the raw body byte for byte.
    assert b"".join(event.line + b"\n\n" for event in streamed.events) == streamed.raw
    assert all(event.line.startswith(b"data: {") for event in streamed.events)
    assert b"OPENROUTER" not in streamed.raw
    assert streamed.terminal("done")["response"] == echo("hello there")


def test_deltas_in_order_join_to_done_and_to_non_streaming_answer(
    client: httpx.Client, api_key: str
) -> None:
    message = "tell me about   rivers\nand the sea"
    streamed = stream_chat(client, api_key, message, model=MODEL)
    plain = post_chat(client, api_key, message, model=MODEL)

    assert plain.status_code == 200, plain.text
    done = streamed.terminal("done")
    # The stand-in streams its reply word by word, in order.
    assert streamed.deltas == wire.word_pieces(echo(message))
    assert "".join(streamed.deltas) == done["response"] == plain.json()["response"]
    assert done["response"] == echo(message)
    assert done["session_id"] != plain.json()["session_id"]


@pytest.mark.parametrize("usage_chunk", ["dummy", "empty"])
def test_done_event_has_every_response_field_and_upstream_usage(
    client: httpx.Client, standin: StandinServer, api_key: str, usage_chunk: str
) -> None:
    standin.control.script(api_key, {"usage_chunk": usage_chunk})
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, "count my tokens", model=MODEL, session_id=session_id)
    plain = post_chat(client, api_key, "count my tokens", model=MODEL).json()

    done = streamed.terminal("done")
    assert done["type"] == "done"
    assert set(done) - {"type"} == set(plain)
    upstream = standin.control.requests(api_key)[0]
    assert upstream["body"]["stream"] is True
    assert done["session_id"] == session_id
    assert done["model_used"] == MODEL
    assert done["generation_id"] == upstream["generation_id"]
    assert done["finish_reason"] == "stop"
    assert done["usage"] == standin_usage(standin, api_key, upstream["generation_id"])
    assert done["tokens_used"] == done["usage"]["total_tokens"] > 0
    # The same conversation costs the same, streamed or not.
    assert done["usage"] == plain["usage"]
    stored = get_session(client, api_key, session_id).json()["messages"][-1]
    assert done["timestamp"] == stored["timestamp"]


def test_saved_history_is_what_a_non_streaming_turn_saves(
    client: httpx.Client, api_key: str
) -> None:
    streamed = stream_chat(client, api_key, "save me", model=MODEL, system_prompt="be short")
    plain = post_chat(client, api_key, "save me", model=MODEL, system_prompt="be short").json()
    done = streamed.terminal("done")

    saved = get_session(client, api_key, done["session_id"]).json()
    reference = get_session(client, api_key, plain["session_id"]).json()

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k not in {"timestamp", "generation_id"}}

    assert [comparable(m) for m in saved["messages"]] == [
        comparable(m) for m in reference["messages"]
    ]
    user, assistant = saved["messages"]
    assert (user["role"], user["content"]) == ("user", "save me")
    assert assistant["content"] == done["response"]
    assert assistant["generation_id"] == done["generation_id"]
    assert assistant["tokens"] == done["tokens_used"]
    assert "interrupted" not in assistant
    assert "error" not in assistant
    for name in ("title", "model", "message_count", "system_prompt"):
        assert saved[name] == reference[name], name


def test_next_turns_replay_the_streamed_history(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    first = stream_chat(client, api_key, "first question", model=MODEL).terminal("done")
    session_id = first["session_id"]
    second = stream_chat(client, api_key, "second one", model=MODEL, session_id=session_id)
    third = post_chat(client, api_key, "third one", model=MODEL, session_id=session_id)

    assert second.terminal("done")["response"] == echo("second one", 2)
    assert third.json()["response"] == echo("third one", 3)
    sent = [record["body"]["messages"] for record in standin.control.requests(api_key)]
    turn_one = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first["response"]},
    ]
    assert sent[1] == [*turn_one, {"role": "user", "content": "second one"}]
    assert sent[2] == [
        *turn_one,
        {"role": "user", "content": "second one"},
        {"role": "assistant", "content": echo("second one", 2)},
        {"role": "user", "content": "third one"},
    ]
    stored = get_session(client, api_key, session_id).json()["messages"]
    assert [m["content"] for m in stored] == [
        "first question",
        first["response"],
        "second one",
        echo("second one", 2),
        "third one",
        echo("third one", 3),
    ]


def test_streamed_turn_usage_reaches_the_worker_inbox(
    client: httpx.Client, standin: StandinServer, redis_client: redis.Redis, api_key: str
) -> None:
    done = stream_chat(client, api_key, "bill me", model=MODEL).terminal("done")
    plain = post_chat(client, api_key, "bill me", model=MODEL).json()

    inbox = inbox_events(redis_client)
    events = [json.loads(raw) for raw in inbox]
    # Each names its session as Redis does: `<owner>:<session id>`.
    by_session = {event["session_id"].rpartition(":")[2]: event for event in events}
    assert len(events) == 2
    event = by_session[done["session_id"]]
    assert (
        event["session_id"] == f"{owner_id(api_key, SESSION_SECRET.encode())}:{done['session_id']}"
    )
    usage = standin_usage(standin, api_key, done["generation_id"])
    assert event.get("status", 200) == 200
    assert event["model"] == MODEL
    assert (
        event["prompt_tokens"],
        event["completion_tokens"],
        event["total_tokens"],
        event["cost"],
    ) == (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"], usage["cost"])
    # The same record as a non-streaming turn's.
    assert set(event) == set(by_session[plain["session_id"]])


# ---- keep-alives ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keepalive_api(redis_url: str, standin: StandinServer) -> Iterator[WebProcess]:
    env = {**base_env(redis_url, standin), "STREAM_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS)}
    with WebProcess(env, free_port()) as web:
        yield web


@pytest.fixture
def keepalive_client(
    keepalive_api: WebProcess, redis_client: redis.Redis
) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keepalive_api.url, timeout=30) as http:
        yield http


def comments_before_delta(streamed: Streamed, index: int) -> list[bytes]:
    """The comment lines received after delta `index - 1` and before delta `index`."""
    seen = -1
    comments: list[bytes] = []
    for event in streamed.events:
        if event.is_comment:
            if seen == index - 1:
                comments.append(event.line)
        elif event.payload["type"] == "delta":
            seen += 1
            if seen == index:
                return comments
    raise AssertionError(f"no delta {index} in {streamed.events}")


def test_keepalives_while_the_model_has_not_answered(
    keepalive_client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    # Upstream sends its own comments, then nothing: neither reaches the client, ours do.
    interval = SILENCE_SECONDS / 4
    standin.control.script(
        api_key,
        {"keepalives": 3, "keepalive_interval": interval, "first_token_delay": interval * 2},
    )
    streamed = stream_chat(keepalive_client, api_key, "think first", model=MODEL)

    comments = comments_before_delta(streamed, 0)
    assert len(comments) >= 2, streamed.events
    assert all(not line.removeprefix(b":").strip().startswith(b"OPENROUTER") for line in comments)
    assert b"OPENROUTER" not in streamed.raw
    assert streamed.terminal("done")["response"] == echo("think first")
    assert "".join(streamed.deltas) == echo("think first")


def test_keepalives_during_a_long_pause(
    keepalive_client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(
        api_key,
        {
            "keepalives": 0,
            "pause_after": 2,
            "pause_seconds": SILENCE_SECONDS,
            "keepalive_interval": SILENCE_SECONDS / 4,
        },
    )
    message = "a reply with a pause in it"
    streamed = stream_chat(keepalive_client, api_key, message, model=MODEL)

    assert comments_before_delta(streamed, 0) == []
    assert len(comments_before_delta(streamed, 2)) >= 2, streamed.events
    assert b"OPENROUTER" not in streamed.raw
    assert "".join(streamed.deltas) == streamed.terminal("done")["response"] == echo(message)


def test_first_keepalive_arrives_before_the_first_token(
    keepalive_client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    # Read live: the comment must reach the client while upstream is still silent.
    standin.control.script(api_key, {"keepalives": 0, "first_token_delay": SILENCE_SECONDS})
    body = {"message": "slow start", "stream": True, "model": MODEL}
    with keepalive_client.stream("POST", "/chat", json=body, headers=bearer(api_key)) as response:
        first = next(EventReader(response))
        upstream = standin.control.requests(api_key)[-1]

    assert first.is_comment, first
    # The stand-in had not sent a token yet: the generation was still in progress.
    assert upstream["completed"] is False


# ---- errors before the stream --------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "status"),
    [
        ({"status": 429, "headers": {"Retry-After": "7"}}, 429),
        ({"status": 401}, 401),
        ({"status": 402}, 402),
    ],
)
def test_upstream_refusal_before_the_stream_is_plain_json(
    client: httpx.Client,
    standin: StandinServer,
    api_key: str,
    step: dict[str, Any],
    status: int,
) -> None:
    # Two keys: a 401 is remembered, and the key's next turn is refused without OpenRouter.
    plain_key = "sk-or-v1-" + secrets.token_hex(32)
    standin.control.script(api_key, step)
    standin.control.script(plain_key, step)
    session_id = new_session_id()
    streamed = stream_chat(client, api_key, "hi", model=MODEL, session_id=session_id)
    plain = post_chat(client, plain_key, "hi", model=MODEL)

    response = streamed.response
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["status"] == status
    assert body["error"]["upstream_status"] == status
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    # Exactly what the non-streaming call answers.
    assert (plain.status_code, error_without_id(plain.json())) == (status, error_without_id(body))
    assert response.headers.get("retry-after") == plain.headers.get("retry-after")
    if "headers" in step:
        assert response.headers["retry-after"] == step["headers"]["Retry-After"]
    assert get_session(client, api_key, session_id).status_code == 404


@pytest.mark.parametrize(
    ("fields", "error_field"),
    [
        ({"message": ""}, "message"),
        ({"message": "hi", "temperature": 5}, "temperature"),
        ({"message": "hi", "session_id": "not a valid id"}, "session_id"),
    ],
)
def test_invalid_stream_request_is_a_400_json_error(
    client: httpx.Client,
    standin: StandinServer,
    api_key: str,
    fields: dict[str, Any],
    error_field: str,
) -> None:
    body = {"stream": True, "model": MODEL, **fields}
    with client.stream("POST", "/chat", json=body, headers=bearer(api_key)) as response:
        response.read()
    plain = client.post("/chat", json={**body, "stream": False}, headers=bearer(api_key))

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_request"
    assert response.json()["error"]["field"] == error_field
    assert error_without_id(response.json()) == error_without_id(plain.json())
    assert standin.control.requests(api_key) == []


def test_stream_without_auth_is_a_401_json_error(client: httpx.Client) -> None:
    body = {"message": "hi", "stream": True}
    with client.stream("POST", "/chat", json=body) as response:
        response.read()
    plain = client.post("/chat", json={"message": "hi"})

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["status"] == 401
    assert error_without_id(response.json()) == error_without_id(plain.json())


def test_streaming_into_another_keys_session_id_streams_into_ones_own(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    owned = stream_chat(client, api_key, "mine", model=MODEL).terminal("done")
    intruder = new_key()

    streamed = stream_chat(client, intruder, "let me in", session_id=owned["session_id"])

    assert streamed.response.status_code == 200
    assert streamed.terminal("done")["session_id"] == owned["session_id"]
    [record] = standin.control.requests(intruder)
    assert record["body"]["messages"] == [{"role": "user", "content": "let me in"}]
    # The first key's session is untouched; the other's holds its own turn only.
    saved = get_session(client, api_key, owned["session_id"]).json()
    assert [m["content"] for m in saved["messages"]] == ["mine", owned["response"]]
    theirs = get_session(client, intruder, owned["session_id"]).json()
    assert [m["content"] for m in theirs["messages"]][::2] == ["let me in"]


# ---- the upstream decoder ------------------------------------------------------------------

UPSTREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a":"caf\xc3\xa9: 1"}\n\n'
    b"event: message\nid: 7\ndata: first line\ndata:second line\ndata:  spaced\n\n"
    b": a comment inside an event\n"
    b"retry: 10\n"
    b"data: [DONE]\n\n"
)
UPSTREAM_DATA = [b'{"a":"caf\xc3\xa9: 1"}', b"first line\nsecond line\n spaced", b"[DONE]"]
LINE_ENDS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}


def decode_each(splits: list[list[bytes]]) -> list[list[bytes]]:
    """The decoder over each list of chunks (its batches flattened), all in one event loop."""

    async def source(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> list[list[bytes]]:
        return [
            [data async for batch in sse_batches(source(chunks)) for data in batch]
            for chunks in splits
        ]

    return asyncio.run(collect())


def every_split(stream: bytes) -> list[list[bytes]]:
    """The stream in two chunks at every byte boundary, and one byte at a time."""
    halves = [[stream[:i], stream[i:]] for i in range(len(stream) + 1)]
    return [*halves, [stream[i : i + 1] for i in range(len(stream))]]


@pytest.mark.parametrize("line_end", list(LINE_ENDS))
def test_sse_decoder_at_every_byte_split(line_end: str) -> None:
    # The stream is cut off inside a last event, which is never dispatched.
    stream = (UPSTREAM + b"data: cut off").replace(b"\n", LINE_ENDS[line_end])
    splits = every_split(stream)

    results = decode_each(splits)

    for chunks, result in zip(splits, results, strict=True):
        assert result == UPSTREAM_DATA, chunks


@pytest.mark.parametrize("line_end", list(LINE_ENDS))
def test_sse_decoder_does_not_dispatch_an_event_cut_off_at_eof(line_end: str) -> None:
    end = LINE_ENDS[line_end]
    complete = b"data: kept" + end + end
    cut_offs = [b"data: lost", b"data: lost" + end, b"data: lost" + end + b"data: more"]

    results = decode_each([[complete + cut] for cut in cut_offs])

    assert results == [[b"kept"]] * len(cut_offs)


def test_sse_decoder_mixed_line_ends_and_crlf_split_between_cr_and_lf() -> None:
    stream = b"data: one\r\n\r\ndata: two\r\rdata: three\n\n"
    # A CR ending one chunk and an LF starting the next are one line end, not two.
    split = [b"data: one\r", b"\n\r", b"\ndata: two\r", b"\rdata: three\n\n"]

    assert decode_each([[stream], split]) == [[b"one", b"two", b"three"]] * 2


def test_sse_decoder_dispatches_a_cr_ended_event_at_eof() -> None:
    # A CR alone ends a line: the blank line is complete, so the event is whole.
    assert decode_each([[b"data: last\r\r"], [b"data: last\r", b"\r"]]) == [[b"last"]] * 2


# ---- every way a stream ends: one `done` or one `error` ------------------------------------


def test_two_callers_starting_one_session_id_at_once_each_get_their_own(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    # The other's quick turn commits while this stream still runs.
    other = new_key()
    session_id = new_session_id()
    standin.control.script(api_key, {"first_token_delay": 1.0})
    with ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stream_chat, client, api_key, "slow words", session_id=session_id)
        time.sleep(0.4)
        quick = post_chat(client, other, "quick words", session_id=session_id)
        streamed = streaming.result()

    assert quick.status_code == 200, quick.text
    assert streamed.terminal("done")["session_id"] == session_id
    for key, words in ((other, "quick words"), (api_key, "slow words")):
        messages = get_session(client, key, session_id).json()["messages"]
        assert [m["content"] for m in messages][::2] == [words]
