"""The OpenRouter stand-in speaks the documented wire format, quirks included, over real HTTP."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.standin import StandinControl, StandinControlError, StandinServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import TypeAlias

    Chat: TypeAlias = Callable[..., httpx.Response]

MODELS_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openrouter-models.json"
KEEPALIVE = ": OPENROUTER PROCESSING"
GEN_ID = re.compile(r"gen-\d{10}-[A-Za-z0-9]{20}")
MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def server() -> Iterator[StandinServer]:
    with StandinServer() as standin:
        yield standin


@pytest.fixture(scope="module")
def client(server: StandinServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5, trust_env=False) as http:
        yield http


@pytest.fixture
def control(server: StandinServer) -> StandinControl:
    server.control.reset()
    return server.control


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"sk-or-v1-{request.node.name}"


@pytest.fixture
def chat(client: httpx.Client, key: str) -> Chat:
    def post(**body: Any) -> httpx.Response:
        body.setdefault("model", MODEL)
        body.setdefault("messages", [{"role": "user", "content": "hello world"}])
        headers = {"Authorization": f"Bearer {key}"}
        return client.post("/chat/completions", json=body, headers=headers)

    return post


def price(model: str) -> tuple[Decimal, Decimal]:
    models = json.loads(MODELS_FIXTURE.read_text())["data"]
    pricing = next(m["pricing"] for m in models if m["id"] == model)
    return Decimal(pricing["prompt"]), Decimal(pricing["completion"])


def events(body: str) -> list[str]:
    """SSE events (comments included) of a body that must be nothing but `\\n\\n`-ended events."""
    assert body.endswith("\n\n")
    parts = body[:-2].split("\n\n")
    assert all("\n" not in part for part in parts), "every event is a single line"
    return parts


def data(event: str) -> dict[str, Any]:
    assert event.startswith("data: {")
    parsed: dict[str, Any] = json.loads(event.removeprefix("data: "))
    return parsed


def wait_for_record(control: StandinControl, key: str, field: str) -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        record = control.requests(key)[-1]
        if record[field]:
            return record
        time.sleep(0.02)
    raise AssertionError(f"record never became {field}: {record}")


# ---- non-streaming -------------------------------------------------------------------------


def test_completion_has_the_documented_shape(control: StandinControl, chat: Chat, key: str) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "one"}],
        },
    ]
    response = chat(messages=messages)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id", "provider", "model", "object", "created", "choices", "usage"]
    assert GEN_ID.fullmatch(body["id"])
    assert response.headers["x-generation-id"] == body["id"]
    assert body["provider"] == "OpenAI"
    assert body["model"] == MODEL
    assert body["object"] == "chat.completion"
    assert abs(body["created"] - time.time()) < 5
    assert body["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "message": {
                "role": "assistant",
                "content": "Echo 2: second one",
                "refusal": None,
                "reasoning": None,
            },
        }
    ]
    prompt_price, completion_price = price(MODEL)
    assert body["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 4,
        "total_tokens": 12,
        "cost": float(8 * prompt_price + 4 * completion_price),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": float(8 * prompt_price),
            "upstream_inference_completions_cost": float(4 * completion_price),
        },
    }
    record = control.requests(key)[-1]
    assert record["generation_id"] == body["id"]
    assert record["body"]["messages"] == messages
    assert record["headers"]["authorization"] == f"Bearer {key}"
    assert (record["stream"], record["completed"], record["cancelled"]) == (False, True, False)


def test_max_tokens_cuts_words_and_reports_length(chat: Chat) -> None:
    body = chat(max_tokens=3, messages=[{"role": "user", "content": "one two three"}]).json()

    assert body["choices"][0]["message"]["content"] == "Echo 1: one"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_a_retired_id_is_refused_as_openrouter_refuses_it(chat: Chat) -> None:
    # The seed's own model id, gone from the catalogue: no test may lean on it.
    response = chat(model="anthropic/claude-3.5-sonnet")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "anthropic/claude-3.5-sonnet is not a valid model ID"
    )


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "No cookie auth credentials found"),
        ("Basic c2stb3ItdjE6", "No cookie auth credentials found"),
        ("Bearer sk-proj-abc", "User not found."),
        ("Bearer sk-or-v1-revoked-1", "User not found."),
    ],
)
def test_auth_failures_are_401_without_user_id(
    client: httpx.Client, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/chat/completions", json=body, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"error": {"message": message, "code": 401}}


@pytest.mark.parametrize("stream", [False, True])
def test_drop_reads_the_request_and_closes_without_an_answer(
    chat: Chat, control: StandinControl, key: str, stream: bool
) -> None:
    control.script(key, {"drop": True})

    with pytest.raises(httpx.RemoteProtocolError):
        chat(stream=stream)
    [record] = control.requests(key)
    assert record["body"]["messages"] == [{"role": "user", "content": "hello world"}]
    assert chat().status_code == 200  # one request only: the next is served


def test_unknown_model_is_400_as_json_even_for_streams(
    chat: Chat,
) -> None:
    response = chat(model="acme/fake-1.0", stream=True)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"message": "acme/fake-1.0 is not a valid model ID", "code": 400},
        "user_id": "user_standin",
    }


def test_malformed_messages_are_400(chat: Chat) -> None:
    response = chat(messages=[])

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


# ---- streaming -----------------------------------------------------------------------------


def test_stream_byte_layout(chat: Chat) -> None:
    response = chat(stream=True, messages=[{"role": "user", "content": "hello  big\nworld"}])

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text.startswith(f"{KEEPALIVE}\n\n{KEEPALIVE}\n\ndata: {{")
    stream = events(response.text)
    assert stream[:2] == [KEEPALIVE, KEEPALIVE]
    assert stream[-1] == "data: [DONE]"
    chunks = [data(event) for event in stream[2:-1]]
    for event, chunk in zip(stream[2:-1], chunks, strict=True):
        if "usage" not in chunk:  # float spelling differs between encoders, e.g. 3e-6
            assert event == "data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False)
        assert list(chunk)[:5] == ["id", "provider", "model", "object", "created"]
        assert chunk["id"] == response.headers["x-generation-id"]
        assert (chunk["model"], chunk["object"]) == (MODEL, "chat.completion.chunk")
    first, *content, finish, usage = chunks
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "native_finish_reason": None,
            "logprobs": None,
        }
    ]
    pieces = [c["choices"][0]["delta"]["content"] for c in content]
    assert pieces == ["Echo", " 1:", " hello", "  big", "\nworld"]
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in content)
    assert finish["choices"][0]["delta"]["content"] == ""
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in finish
    assert usage["usage"]["completion_tokens"] == 5


def test_keepalives_are_flushed_before_the_first_token(
    client: httpx.Client, control: StandinControl, key: str
) -> None:
    control.script(key, {"keepalives": 1, "first_token_delay": 0.6})
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    with client.stream("POST", "/chat/completions", json=body, headers=headers) as response:
        lines = response.iter_lines()
        assert next(lines) == KEEPALIVE
        assert time.monotonic() - started < 0.4
        assert next(lines) == ""
        assert next(lines).startswith("data: {")
        assert time.monotonic() - started >= 0.6
        assert list(lines)[-2] == "data: [DONE]"


@pytest.mark.parametrize("variant", ["dummy", "empty", "none"])
def test_usage_chunk_variants(control: StandinControl, chat: Chat, key: str, variant: str) -> None:
    control.script(key, {"usage_chunk": variant})
    stream = events(chat(stream=True).text)

    assert stream[-1] == "data: [DONE]"
    last = data(stream[-2])
    if variant == "none":
        assert "usage" not in last
        assert last["choices"][0]["finish_reason"] == "stop"
        return
    assert last["usage"]["total_tokens"] == 2 + 4
    if variant == "empty":
        assert last["choices"] == []
    else:
        assert last["choices"] == [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
                "native_finish_reason": None,
                "logprobs": None,
            }
        ]


@pytest.mark.parametrize(
    ("form", "code"), [("documented", 502), ("observed", "server_error"), ("observed", 429)]
)
def test_mid_stream_error_forms(
    control: StandinControl,
    chat: Chat,
    key: str,
    form: str,
    code: int | str,
) -> None:
    control.script(
        key, {"error_after": 2, "error_form": form, "error_code": code, "error_message": "boom"}
    )
    response = chat(stream=True)

    assert response.status_code == 200
    stream = events(response.text)
    assert stream[-1] == "data: [DONE]"
    chunks = [data(event) for event in stream[2:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == ["", "Echo", " 1:"]
    error = chunks[-1]
    assert error["id"] == chunks[0]["id"]
    assert error["error"]["code"] == code
    assert error["error"]["message"] == "boom"
    if form == "documented":
        assert error["choices"] == [
            {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        ]
        assert "usage" not in error
    else:
        assert error["choices"][0]["finish_reason"] is None
        assert error["usage"]["completion_tokens"] == 2


def test_drop_after_ends_the_body_abruptly(control: StandinControl, chat: Chat, key: str) -> None:
    control.script(key, {"drop_after": 1})
    stream = events(chat(stream=True).text)

    chunks = [data(event) for event in stream[2:]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["", "Echo"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert control.requests(key)[-1]["completed"] is True


def test_no_done_ends_after_the_usage_chunk(control: StandinControl, chat: Chat, key: str) -> None:
    control.script(key, {"no_done": True})
    stream = events(chat(stream=True).text)

    assert "data: [DONE]" not in stream
    assert "usage" in data(stream[-1])


def test_pause_sends_keepalives_mid_stream(control: StandinControl, chat: Chat, key: str) -> None:
    pause = {"pause_after": 1, "pause_seconds": 0.25, "keepalive_interval": 0.1}
    control.script(key, {"keepalives": 0, **pause})
    stream = events(chat(stream=True).text)

    assert stream[0].startswith("data: ")
    assert stream[2:4] == [KEEPALIVE, KEEPALIVE]
    assert stream[4].startswith("data: ")


# ---- scripted failures ---------------------------------------------------------------------


def test_status_step_uses_the_error_envelope_and_headers(
    control: StandinControl, chat: Chat, key: str
) -> None:
    control.script(
        key, {"status": 429, "metadata": {"limit_source": "x"}, "headers": {"Retry-After": 7}}
    )
    response = chat(stream=True)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"message": "Rate limit exceeded", "code": 429, "metadata": {"limit_source": "x"}},
        "user_id": "user_standin",
    }


def test_raw_body_is_sent_verbatim(control: StandinControl, chat: Chat, key: str) -> None:
    html = "<html><title>Worker exceeded resource limits | openrouter.ai | Cloudflare</title>"
    control.script(key, {"status": 503, "raw_body": html}, {"raw_body": '{"id": "gen-'})

    first, second = chat(), chat()
    assert (first.status_code, first.headers["content-type"], first.text) == (
        503,
        "text/html",
        html,
    )
    assert (second.status_code, second.text) == (200, '{"id": "gen-')


def test_body_error_is_a_200_with_a_top_level_error(
    control: StandinControl, chat: Chat, key: str
) -> None:
    control.script(key, {"body_error": {"message": "busy", "code": 503}})
    response = chat()

    assert response.status_code == 200
    assert response.json() == {"error": {"message": "busy", "code": 503}, "user_id": "user_standin"}


def test_choice_error_keeps_the_partial_reply(
    control: StandinControl, chat: Chat, key: str
) -> None:
    error = {"code": 502, "message": "Provider disconnected mid-stream"}
    control.script(key, {"choice_error": error, "content": "partial output"})
    choice = chat().json()["choices"][0]

    assert choice["finish_reason"] == "error"
    assert choice["error"] == error
    assert choice["message"]["content"] == "partial output"


def test_fallback_reports_the_model_that_served(
    control: StandinControl, chat: Chat, key: str
) -> None:
    control.script(key, {"fallback": True}, {"fallback": True})

    served = chat(models=["anthropic/claude-sonnet-4.5"]).json()
    assert (served["model"], served["provider"]) == ("anthropic/claude-sonnet-4.5", "Anthropic")
    assert chat().status_code == 503


def test_scripts_are_consumed_in_order_per_key(
    server: StandinServer, control: StandinControl, client: httpx.Client
) -> None:
    control.script("sk-or-v1-a", {"content": "first"}, {"content": "second"})
    control.script("sk-or-v1-b", {"status": 500})

    def reply(key: str) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        return client.post(
            "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )

    results = [reply(k) for k in ("sk-or-v1-a", "sk-or-v1-b", "sk-or-v1-a", "sk-or-v1-a")]
    assert [r.status_code for r in results] == [200, 500, 200, 200]
    contents = [results[i].json()["choices"][0]["message"]["content"] for i in (0, 2, 3)]
    assert contents == ["first", "second", "Echo 1: hi"]
    assert len(control.requests("sk-or-v1-a")) == 3
    assert control.stats() == {"models_requests": 0, "chat_requests": 4, "pending_steps": 0}


def test_misspelt_step_field_is_rejected(control: StandinControl) -> None:
    with pytest.raises(StandinControlError, match="stauts"):
        control.script("sk-or-v1-x", {"stauts": 429})


# ---- disconnects ---------------------------------------------------------------------------


def test_client_leaving_a_stream_marks_it_cancelled(
    client: httpx.Client, control: StandinControl, key: str
) -> None:
    control.script(key, {"chunk_delay": 0.2})
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    with client.stream("POST", "/chat/completions", json=body, headers=headers) as response:
        generation_id = response.headers["x-generation-id"]
        assert next(line for line in response.iter_lines() if line.startswith("data: "))

    record = wait_for_record(control, key, "cancelled")
    assert record["completed"] is False
    generation = client.get("/generation", params={"id": generation_id}, headers=headers).json()[
        "data"
    ]
    assert (generation["streamed"], generation["cancelled"]) == (True, True)


def test_client_leaving_a_hung_request_marks_it_cancelled(
    client: httpx.Client, control: StandinControl, key: str
) -> None:
    control.script(key, {"hang": True})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        client.post(
            "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=0.3,
        )

    assert wait_for_record(control, key, "cancelled")["completed"] is False


# ---- other endpoints -----------------------------------------------------------------------


def test_generation_lookup(client: httpx.Client, chat: Chat, key: str) -> None:
    completion = chat().json()
    headers = {"Authorization": f"Bearer {key}"}

    found = client.get("/generation", params={"id": completion["id"]}, headers=headers)
    assert found.json() == {
        "data": {
            "id": completion["id"],
            "model": MODEL,
            "streamed": False,
            "cancelled": False,
            "tokens_prompt": 2,
            "tokens_completion": 4,
            "total_cost": completion["usage"]["cost"],
            "finish_reason": "stop",
        }
    }
    missing = client.get("/generation", params={"id": "gen-0-nope"}, headers=headers)
    assert missing.status_code == 404
    assert client.get("/generation", params={"id": completion["id"]}).status_code == 401


def test_models_are_served_and_can_fail(client: httpx.Client, control: StandinControl) -> None:
    served = client.get("/models")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert b"\n" not in served.content
    assert served.json() == json.loads(MODELS_FIXTURE.read_text())

    control.fail_models({"status": 503})
    failed = client.get("/models")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == 503

    control.fail_models({"status": 200, "raw_body": "<html>oops</html>"})
    html = client.get("/models")
    assert (html.status_code, html.headers["content-type"], html.text) == (
        200,
        "text/html",
        "<html>oops</html>",
    )

    control.fail_models({"hang": True})
    with pytest.raises(httpx.ReadTimeout):
        client.get("/models", timeout=0.2)

    control.fail_models(None)
    assert client.get("/models").status_code == 200
    assert control.stats()["models_requests"] == 5
