"""`/v1`: the official `openai` SDK pointed at the running API and the OpenRouter stand-in."""

from __future__ import annotations

import json
import secrets
import sys
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from tests.conftest import base_env, bearer
from tests.e2e.test_readme_clients import readme_block, run
from tests.e2e.test_worker import WorkerPool, metric_totals, wait_for
from tests.support.redis_server import RedisServer
from tests.support.redis_state import inbox_events, indexed_sessions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from tests.conftest import Store
    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

pytestmark = pytest.mark.stores("standalone", "cluster")

MODEL = "anthropic/claude-sonnet-4.5"
NEW = {"X-Session-Id": "new"}
IMAGE = "data:image/png;base64,iVBORw0KGgo="
WEATHER_CALL = {
    "id": "call_weather_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon", "unit": "celsius"}'},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def sdk_client(url: str, key: str) -> openai.OpenAI:
    # No retries: a 429 must surface at once, as the test expects it.
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def sdk(api: WebProcess, api_key: str, redis_client: redis.Redis) -> Iterator[openai.OpenAI]:
    with sdk_client(api.url, api_key) as client:
        yield client


def upstream_bodies(standin: StandinServer, key: str) -> list[dict[str, Any]]:
    return [record["body"] for record in standin.control.requests(key)]


def session_detail(client: httpx.Client, key: str, session_id: str) -> dict[str, Any]:
    response = client.get(f"/sessions/{session_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def inbox(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in inbox_events(redis_client)]


# ---- pass-through ----------------------------------------------------------------------------


def test_plain_completion_passes_the_messages_through_and_stores_no_session(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, redis_client: redis.Redis
) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
    ]
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, temperature=0.3, extra_body={"provider": {"sort": "price"}}
    )
    reply = raw.parse()

    assert reply.choices[0].message.content == "Echo 2: How are you?"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == MODEL
    assert reply.id.startswith("gen-")
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert "x-session-id" not in raw.headers
    [body] = upstream_bodies(standin, api_key)
    assert body["messages"] == messages
    assert body["provider"] == {"sort": "price"}
    assert body["temperature"] == 0.3
    assert "session_id" not in body
    # Nothing stored, but the turn counts in the usage metrics (an event without a session).
    assert indexed_sessions(redis_client) == 0
    [event] = inbox(redis_client)
    assert "session_id" not in event
    assert event["model"] == MODEL
    assert event["total_tokens"] == reply.usage.total_tokens
    assert event.get("status", 200) == 200


def test_streamed_completion_reads_with_the_sdk_iterator(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, redis_client: redis.Redis
) -> None:
    standin.control.script(api_key, {"content": "One two three four"})
    stream = sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three four"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert "stop" in finishes
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert {c.id for c in chunks} == {chunks[0].id}
    [body] = upstream_bodies(standin, api_key)
    assert body["stream"] is True
    [event] = inbox(redis_client)
    assert "session_id" not in event and event["completion_tokens"] == 4


def test_models_list_through_the_sdk(sdk: openai.OpenAI, client: httpx.Client) -> None:
    models = list(sdk.models.list())

    openrouter_ids = [model["id"] for model in client.get("/models").json()["data"]]
    assert [model.id for model in models] == openrouter_ids
    assert all(model.object == "model" for model in models)
    assert models[0].owned_by == models[0].id.partition("/")[0]
    first = client.get("/v1/models")
    assert first.json()["object"] == "list"
    # OpenRouter's own fields are kept next to OpenAI's.
    assert "pricing" in first.json()["data"][0]
    again = client.get("/v1/models", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert first.headers["etag"] != client.get("/models").headers["etag"]


# ---- errors ----------------------------------------------------------------------------------


def test_upstream_429_is_the_sdks_rate_limit_error(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"status": 429, "headers": {"Retry-After": "7"}})

    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.body == {
        "message": "Rate limit exceeded",
        "type": "rate_limit_error",
        "code": "rate_limited",
        "param": None,
    }


def test_streamed_429_before_the_stream_is_a_rate_limit_error(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(api_key, {"status": 429})

    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_a_key_openrouter_refuses_is_the_sdks_authentication_error(
    api: WebProcess, redis_client: redis.Redis
) -> None:
    with (
        sdk_client(api.url, "not-an-openrouter-key") as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body == {
        "message": "User not found.",
        "type": "authentication_error",
        "code": "upstream_unauthorized",
        "param": None,
    }


def test_no_key_is_a_401_in_openai_shape(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
    )

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "unauthorized"
    assert "Authorization" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "10"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "max_tokens"),
    ],
)
def test_invalid_requests_name_the_param(
    client: httpx.Client, api_key: str, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/chat/completions", json=body, headers=bearer(api_key))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "system", "content": "Only a prompt"}], "messages"),
        ([{"role": "tool", "content": "18 °C"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "hi"}, {"role": "user"}], "messages[1].content"),
        ([{"role": "narrator", "content": "hi"}], "messages[0].role"),
    ],
)
def test_session_turns_check_the_new_messages(
    client: httpx.Client,
    api_key: str,
    standin: StandinServer,
    messages: list[dict[str, Any]],
    param: str,
) -> None:
    response = client.post(
        "/v1/chat/completions", json={"messages": messages}, headers={**bearer(api_key), **NEW}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert upstream_bodies(standin, api_key) == []


def test_a_malformed_session_id_is_a_400(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={**bearer(api_key), "X-Session-Id": "chat:{x}"},
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "X-Session-Id"
    assert error["message"].startswith("X-Session-Id: `new`, or a session id")


def test_another_keys_session_id_names_a_session_of_ones_own(
    sdk: openai.OpenAI, api: WebProcess, standin: StandinServer, api_key: str
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "mine"}], extra_headers=NEW
    )
    session_id = raw.headers["x-session-id"]
    intruder = "sk-or-v1-" + secrets.token_hex(32)
    with sdk_client(api.url, intruder) as other:
        other.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "yours?"}],
            extra_headers={"X-Session-Id": session_id},
        )
    [record] = standin.control.requests(intruder)
    assert record["body"]["messages"] == [{"role": "user", "content": "yours?"}]


def test_a_stream_that_breaks_raises_the_sdks_api_error_and_keeps_the_text(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    standin.control.script(api_key, {"content": "alpha beta gamma delta", "error_after": 2})
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True, extra_headers=NEW
    )
    session_id = raw.headers["x-session-id"]
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "alpha beta"
    assert "Provider disconnected mid-stream" in caught.value.message
    assert caught.value.body["type"] == "server_error"  # type: ignore[index]
    answer = session_detail(client, api_key, session_id)["messages"][-1]
    assert answer["content"] == "alpha beta"
    assert "Provider disconnected" in answer["error"]


# ---- memory ----------------------------------------------------------------------------------


def test_a_session_keeps_context_across_turns_and_continues_through_chat(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    first = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You remember names."},
            {"role": "user", "content": "My name is Ana."},
        ],
        extra_headers=NEW,
    )
    session_id = first.headers["x-session-id"]
    assert first.parse().choices[0].message.content == "Echo 1: My name is Ana."

    second = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is my name?"}],
        extra_headers={"X-Session-Id": session_id},
    )

    assert second.headers["x-session-id"] == session_id
    assert second.parse().choices[0].message.content == "Echo 2: What is my name?"
    upstream = upstream_bodies(standin, api_key)[-1]
    assert upstream["session_id"] == session_id
    assert [(m["role"], m["content"]) for m in upstream["messages"]] == [
        ("system", "You remember names."),
        ("user", "My name is Ana."),
        ("assistant", "Echo 1: My name is Ana."),
        ("user", "What is my name?"),
    ]
    # The same session, through /chat and /sessions.
    answer = client.post(
        "/chat", json={"message": "And now?", "session_id": session_id}, headers=bearer(api_key)
    )
    assert answer.json()["response"] == "Echo 3: And now?"
    detail = session_detail(client, api_key, session_id)
    assert detail["system_prompt"] == "You remember names."
    assert detail["title"] == "My name is Ana."
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 3


def test_a_system_message_in_a_later_request_replaces_the_sessions_prompt(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    first = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Old."}, {"role": "user", "content": "a"}],
        extra_headers=NEW,
    )
    session_id = first.headers["x-session-id"]
    parts = [{"type": "text", "text": "b"}, {"type": "image_url", "image_url": {"url": IMAGE}}]
    sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "developer", "content": "New."}, {"role": "user", "content": parts}],  # type: ignore[misc,list-item]
        extra_headers={"X-Session-Id": session_id},
    )
    sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "c"}],
        extra_headers={"X-Session-Id": session_id},
    )

    second, third = upstream_bodies(standin, api_key)[1:]
    assert second["messages"][0] == {"role": "system", "content": "New."}
    assert third["messages"][0] == {"role": "system", "content": "New."}
    assert sum(m["role"] == "system" for m in third["messages"]) == 1
    # Content parts are stored and sent again as they came.
    assert {"role": "user", "content": parts} in third["messages"]
    assert session_detail(client, api_key, session_id)["system_prompt"] == "New."


def test_tool_calls_round_trip_through_a_session(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    standin.control.script(api_key, {"tool_calls": [WEATHER_CALL]}, {"content": "18 °C, sunny."})
    first = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Lisbon?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_headers=NEW,
    )
    session_id = first.headers["x-session-id"]
    choice = first.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.id == WEATHER_CALL["id"]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]

    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'}
    second = sdk.chat.completions.create(
        model=MODEL,
        messages=[result],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_headers={"X-Session-Id": session_id},
    )

    assert second.choices[0].message.content == "18 °C, sunny."
    first_body, second_body = upstream_bodies(standin, api_key)
    assert first_body["tools"] == second_body["tools"] == [WEATHER_TOOL]
    assert second_body["messages"] == [
        {"role": "user", "content": "Weather in Lisbon?"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        result,
    ]
    stored = session_detail(client, api_key, session_id)["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"] == [WEATHER_CALL]
    assert stored[2]["tool_call_id"] == WEATHER_CALL["id"]
    # /chat continues the session with the tool exchange intact.
    client.post(
        "/chat", json={"message": "Thanks", "session_id": session_id}, headers=bearer(api_key)
    )
    assert upstream_bodies(standin, api_key)[-1]["messages"][1:3] == second_body["messages"][1:3]


def test_streamed_tool_calls_reach_the_sdk_and_are_stored_whole(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    standin.control.script(api_key, {"tool_calls": [WEATHER_CALL]})
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
        extra_headers=NEW,
    )
    arguments: list[str] = []
    names: list[str] = []
    finish: list[str] = []
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)
    for chunk in stream:
        if not chunk.choices:
            continue
        for fragment in chunk.choices[0].delta.tool_calls or []:
            if fragment.function and fragment.function.name:
                names.append(fragment.function.name)
            if fragment.function and fragment.function.arguments:
                arguments.append(fragment.function.arguments)
        if chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)

    assert names == ["get_weather"]
    assert len(arguments) > 1  # relayed as fragments, as OpenRouter sent them
    assert "".join(arguments) == WEATHER_CALL["function"]["arguments"]  # type: ignore[index]
    assert finish == ["tool_calls"]
    session_id = raw.headers["x-session-id"]
    answer = session_detail(client, api_key, session_id)["messages"][-1]
    assert answer["tool_calls"] == [WEATHER_CALL]
    assert answer.get("content") is None


def test_history_is_trimmed_to_whole_turns(
    start_api: Callable[..., WebProcess],
    standin: StandinServer,
    api_key: str,
    redis_client: redis.Redis,
) -> None:
    web = start_api(MAX_HISTORY_MESSAGES="4")
    standin.control.script(api_key, {"tool_calls": [WEATHER_CALL]})
    with sdk_client(web.url, api_key) as sdk, httpx.Client(base_url=web.url) as http:
        first = sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Weather?"}], extra_headers=NEW
        )
        session = {"X-Session-Id": first.headers["x-session-id"]}
        result = {"role": "tool", "tool_call_id": WEATHER_CALL["id"], "content": "18"}
        sdk.chat.completions.create(model=MODEL, messages=[result], extra_headers=session)  # type: ignore[list-item]
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Thanks"}], extra_headers=session
        )
        # Six messages, four allowed: a plain cut would keep the tool result without its call.
        stored = session_detail(http, api_key, session["X-Session-Id"])["messages"]
        assert [(m["role"], m.get("content")) for m in stored] == [
            ("user", "Thanks"),
            ("assistant", "Echo 2: Thanks"),
        ]
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Bye"}], extra_headers=session
        )
    last = upstream_bodies(standin, api_key)[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


def test_cors_allows_and_exposes_the_session_header(client: httpx.Client, api_key: str) -> None:
    origin = {"Origin": "http://localhost:3000"}
    preflight = client.options(
        "/v1/chat/completions",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-session-id",
        },
    )
    assert preflight.status_code < 300, preflight.text
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "x-session-id" in allowed

    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={**origin, **bearer(api_key), **NEW},
    )
    assert response.status_code == 200, response.text
    assert "x-session-id" in response.headers["access-control-expose-headers"].lower()


@pytest.mark.stores("standalone")  # its own Redis, stopped
def test_without_redis_a_pass_through_is_served_only_without_rate_limits(
    start_api: Callable[..., WebProcess], api_key: str
) -> None:
    with RedisServer() as own_redis:
        limited = start_api(REDIS_URL=own_redis.url)
        unlimited = start_api(REDIS_URL=own_redis.url, RATE_LIMIT_PER_MINUTE="0")
        own_redis.stop()
        with sdk_client(unlimited.url, api_key) as sdk:
            # Nothing of it is stored: only its usage event is lost, and the log says so.
            reply = sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "still there?"}]
            )
            assert reply.choices[0].message.content == "Echo 1: still there?"
            with pytest.raises(openai.InternalServerError) as with_session:
                sdk.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_headers=NEW
                )
        # A rate limit cannot be checked without Redis: the turn is refused, not let through.
        with (
            sdk_client(limited.url, api_key) as sdk,
            pytest.raises(openai.InternalServerError) as limited_pass_through,
        ):
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "still there?"}]
            )
    for caught in (with_session, limited_pass_through):
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "storage_unavailable"  # type: ignore[index]
        assert caught.value.response.headers["retry-after"] == "1"


def test_readme_openai_sdk_example(
    api: WebProcess, standin: StandinServer, api_key: str, redis_client: redis.Redis
) -> None:
    example = readme_block("### OpenAI SDKs", "python")
    program = f"OPENROUTER_API_KEY = {api_key!r}\n" + example.replace(
        "http://localhost:8000", api.url
    )

    result = run([sys.executable, "-c"], program)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Echo 1: Olá!\nEcho 2: What is my name?"
    last = upstream_bodies(standin, api_key)[-1]
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]


def test_a_broken_stream_keeps_its_text_but_not_its_tool_calls(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    # Without [DONE] the answer is incomplete: a call in it may be cut short.
    standin.control.script(
        api_key, {"content": "Checking.", "tool_calls": [WEATHER_CALL], "no_done": True}
    )
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather?"}],
        stream=True,
        extra_headers=NEW,
    )
    stream = raw.parse()
    assert isinstance(stream, openai.Stream)

    with pytest.raises(openai.APIError, match=r"without its \[DONE\]"):
        list(stream)

    answer = session_detail(client, api_key, raw.headers["x-session-id"])["messages"][-1]
    assert answer["content"] == "Checking."
    assert "tool_calls" not in answer
    assert "[DONE]" in answer["error"]


def test_a_quiet_stream_carries_keep_alive_comments_the_sdk_skips(
    start_api: Callable[..., WebProcess], standin: StandinServer, api_key: str
) -> None:
    web = start_api(STREAM_KEEPALIVE_SECONDS="0.2")
    standin.control.script(api_key, {"first_token_delay": 1.0}, {"first_token_delay": 1.0})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "slow"}], "stream": True}
    with httpx.Client(base_url=web.url, timeout=30) as http:
        wire = http.post("/v1/chat/completions", json=body, headers=bearer(api_key)).text
    with sdk_client(web.url, api_key) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "slow"}], stream=True
            )
        )

    assert ": keep-alive\n\n" in wire
    assert wire.endswith("data: [DONE]\n\n")
    assert "OPENROUTER PROCESSING" not in wire
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo 1: slow"


def test_a_chat_session_continues_through_v1_and_a_failed_turn_stores_nothing(
    sdk: openai.OpenAI, standin: StandinServer, api_key: str, client: httpx.Client
) -> None:
    started = client.post(
        "/chat",
        json={"message": "Remember 42.", "system_prompt": "Be exact."},
        headers=bearer(api_key),
    ).json()
    session = {"X-Session-Id": started["session_id"]}

    reply = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Which number?"}], extra_headers=session
    )
    standin.control.script(api_key, {"status": 429})
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Lost?"}], extra_headers=session
        )

    assert reply.choices[0].message.content == "Echo 2: Which number?"
    sent = upstream_bodies(standin, api_key)[1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "Be exact."),
        ("user", "Remember 42."),
        ("assistant", "Echo 1: Remember 42."),
        ("user", "Which number?"),
    ]
    stored = session_detail(client, api_key, started["session_id"])["messages"]
    assert [m["content"] for m in stored] == [
        "Remember 42.",
        "Echo 1: Remember 42.",
        "Which number?",
        "Echo 2: Which number?",
    ]


def test_the_worker_counts_pass_through_turns_in_the_daily_metrics(
    sdk: openai.OpenAI, store: Store, standin: StandinServer, redis_client: redis.Redis
) -> None:
    replies = [
        sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
        for text in ("one", "two words")
    ]

    with WorkerPool(base_env(store, standin)) as pool:
        pool.start()

        def counted() -> dict[str, float]:
            totals = metric_totals(redis_client).get(MODEL, {})
            return totals if totals.get("requests") == 2 else {}

        totals = wait_for(counted, timeout=20, what="two pass-through turns in the metrics")
    assert totals["total_tokens"] == sum(r.usage.total_tokens for r in replies if r.usage)
    assert "errors" not in totals
    assert not inbox_events(redis_client)


def test_a_sessions_reasoning_details_round_trip_through_v1(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    reasoning = [{"type": "reasoning.text", "text": "Thinking it over.", "index": 0}]
    standin.control.script(api_key, {"reasoning_details": reasoning})
    first = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={**bearer(api_key), "X-Session-Id": "new"},
    )
    assert first.status_code == 200, first.text
    session_id = first.headers["x-session-id"]
    again = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "and?"}]},
        headers={**bearer(api_key), "X-Session-Id": session_id},
    )
    assert again.status_code == 200, again.text

    assert session_detail(client, api_key, session_id)["messages"][1]["reasoning_details"] == (
        reasoning
    )
    assert upstream_bodies(standin, api_key)[1]["messages"][1]["reasoning_details"] == reasoning
