"""The caller's key goes to OpenRouter only; one JSON log line per request; X-Request-ID."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import bearer

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

MODEL = "openai/gpt-4o-mini"
# What the app may generate in place of a client's id must still be a safe header value.
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id() -> str:
    return f"test-{secrets.token_hex(8)}"


def secret_parts(key: str) -> list[str]:
    """The key, and its random part alone (a leak may drop the `sk-or-v1-` prefix)."""
    return [key, key.removeprefix("sk-or-v1-")]


def log_entries(web: WebProcess) -> list[dict[str, Any]]:
    entries = []
    for line in web.logs().splitlines():
        if line.strip():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            entries.append(entry)
    return entries


def request_lines(
    web: WebProcess, ids: set[str], timeout: float = 10, *, count: int = 0
) -> list[dict[str, Any]]:
    """The request log lines of these request ids, once every one of them is written (and at
    least `count` lines, where requests share an id)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            entry
            for entry in log_entries(web)
            if entry.get("logger") == "app.request" and entry.get("request_id") in ids
        ]
        if {line["request_id"] for line in lines} >= ids and len(lines) >= count:
            return lines
        missing = ids - {line["request_id"] for line in lines}
        assert time.monotonic() < deadline, f"no log line for {missing}"
        time.sleep(0.05)


def redis_dump(redis_client: redis.Redis) -> bytes:
    """Every key and every value in the database, whatever its type."""
    r: Any = redis_client  # redis-py's sync stubs type every reply as maybe-awaitable
    parts: list[bytes] = []
    for key in r.scan_iter(count=1000):
        parts.append(key)
        kind = r.type(key)
        if kind == b"string":
            parts.append(r.get(key) or b"")
        elif kind == b"list":
            parts.extend(r.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in r.hgetall(key).items():
                parts += [field, value]
        elif kind == b"set":
            parts.extend(r.smembers(key))
        elif kind == b"zset":
            parts.extend(member for member, _ in r.zrange(key, 0, -1, withscores=True))
        elif kind == b"stream":
            for entry_id, fields in r.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        else:
            raise AssertionError(f"unexpected type {kind!r} of {key!r}")
    return b"\n".join(parts)


def response_text(response: httpx.Response) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"{headers}\n{response.text}"


class Spread:
    """Requests of every kind with one key, each with an X-Request-ID of its own."""

    def __init__(self, http: httpx.Client, key: str, standin: StandinServer) -> None:
        self.http = http
        self.key = key
        self.standin = standin
        self.responses: dict[str, httpx.Response] = {}

    def send(
        self,
        method: str,
        path: str,
        *,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        rid = request_id()
        sent = {
            "X-Request-ID": rid,
            "Authorization": auth or f"Bearer {self.key}",
            **(headers or {}),
        }
        response = self.http.request(method, path, headers=sent, **kw)
        self.responses[rid] = response
        return response

    def chat(self, expected: int, **body: Any) -> httpx.Response:
        response = self.send("POST", "/chat", json=body)
        assert response.status_code == expected, response.text
        return response

    def upstream_fails(self, step: dict[str, Any], expected: int) -> None:
        self.standin.control.script(self.key, step)
        self.chat(expected, message="this one fails upstream")

    def run(self) -> None:
        first = self.chat(200, message="hello", system_prompt="Be brief.", model=MODEL).json()
        session_id = first["session_id"]
        self.chat(200, message="again", session_id=session_id)
        self.chat(400, message="too hot", temperature=5)
        self.chat(400, message="")
        malformed = self.send(
            "POST", "/chat", content=b'{"message": ', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        self.upstream_fails({"status": 429, "headers": {"Retry-After": "30"}}, 429)
        self.upstream_fails({"status": 500}, 502)
        self.upstream_fails({"status": 400, "message": f"Bad key {self.key} in request"}, 400)
        assert self.send("GET", "/sessions").status_code == 200
        assert self.send("GET", f"/sessions/{session_id}").status_code == 200
        assert self.send("GET", "/sessions/not-there").status_code == 404
        assert self.send("DELETE", "/sessions/not-there").status_code == 404
        assert self.send("GET", "/no-such-route").status_code == 404
        # The key in a malformed header: rejected without being repeated back.
        bad_auth = self.send("GET", "/sessions", auth=f"Bearer {self.key} trailing")
        assert bad_auth.status_code == 401
        doomed = self.chat(200, message="short-lived").json()["session_id"]
        assert self.send("DELETE", f"/sessions/{doomed}").status_code == 204
        # The OpenAI-compatible routes: with memory, streamed, and a failure quoting the key.
        messages = [{"role": "user", "content": "hello from the SDK"}]
        for stream in (False, True):
            answer = self.send(
                "POST",
                "/v1/chat/completions",
                json={"messages": messages, "stream": stream},
                headers={"X-Session-Id": session_id},
            )
            assert answer.status_code == 200, answer.text
        self.standin.control.script(self.key, {"status": 401, "message": f"Key {self.key} bad"})
        refused = self.send("POST", "/v1/chat/completions", json={"messages": messages})
        assert refused.status_code == 401, refused.text
        # Remembered (by the key's HMAC): refused again without OpenRouter.
        self.chat(401, message="refused again")
        assert self.send("GET", "/v1/models").status_code == 200


# ---- the key ---------------------------------------------------------------------------------


@pytest.fixture(params=["INFO", "DEBUG"])
def logged_api(request: pytest.FixtureRequest, start_api: Callable[..., WebProcess]) -> WebProcess:
    """An API of the test's own, so its log holds only this test's requests."""
    level: str = request.param
    return start_api(LOG_LEVEL=level)


def test_key_is_never_logged_stored_or_returned(
    logged_api: WebProcess,
    standin: StandinServer,
    redis_client: redis.Redis,
    api_key: str,
) -> None:
    with httpx.Client(base_url=logged_api.url, timeout=30) as http:
        spread = Spread(http, api_key, standin)
        spread.run()

    # Forwarded upstream, where it belongs, on every call.
    upstream = standin.control.requests(api_key)
    assert len(upstream) == 9
    assert all(r["headers"]["authorization"] == f"Bearer {api_key}" for r in upstream)

    request_lines(logged_api, set(spread.responses))
    logs = logged_api.logs()
    stored = redis_dump(redis_client)
    assert b"hello" in stored, "the session was stored, so the scan saw real data"
    for secret in secret_parts(api_key):
        assert secret not in logs
        assert secret.encode() not in stored
        for rid, response in spread.responses.items():
            assert secret not in response_text(response), rid


def test_upstream_message_with_the_key_is_redacted(
    client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    standin.control.script(
        api_key,
        {
            "status": 400,
            "message": f"Invalid API key {api_key} for this model",
            "metadata": {"raw": f"provider said: key={api_key}"},
        },
    )

    response = client.post("/chat", json={"message": "hi"}, headers=bearer(api_key))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["upstream_status"] == 400
    message = error["message"]
    for secret in secret_parts(api_key):
        assert secret not in response_text(response)
    # The rest of OpenRouter's message reaches the client.
    assert message.startswith("Invalid API key ")
    assert "for this model" in message
    assert "provider said: key=" in message


# ---- request log lines -----------------------------------------------------------------------


def test_one_json_log_line_per_request(
    api: WebProcess, client: httpx.Client, standin: StandinServer, api_key: str
) -> None:
    spread = Spread(client, api_key, standin)
    spread.run()

    lines = request_lines(api, set(spread.responses))

    assert len(lines) == len(spread.responses)
    for line in lines:
        response = spread.responses[line["request_id"]]
        assert line["method"] == response.request.method
        assert line["path"] == response.request.url.path
        assert line["status"] == response.status_code
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
        assert line["level"] == "INFO"
        assert line["time"]


def test_chat_log_line_names_session_model_and_tokens(
    api: WebProcess, client: httpx.Client, api_key: str
) -> None:
    rid = request_id()

    response = client.post(
        "/chat",
        json={"message": "count my tokens", "model": MODEL},
        headers={**bearer(api_key), "X-Request-ID": rid},
    )

    assert response.status_code == 200
    turn = response.json()
    (line,) = request_lines(api, {rid})
    assert line["session_id"] == turn["session_id"]
    assert line["model"] == turn["model_used"]
    assert line["tokens"] == turn["tokens_used"]
    assert line["status"] == 200


def test_every_log_line_is_json(api: WebProcess, client: httpx.Client, api_key: str) -> None:
    rid = request_id()
    client.get("/sessions", headers={**bearer(api_key), "X-Request-ID": rid})
    request_lines(api, {rid})

    # log_entries parses each line as a JSON object and fails on any other line.
    entries = log_entries(api)

    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)


# ---- X-Request-ID ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rid", ["req-42", "trace.id:7_abc-DEF", "x" * 128], ids=["plain", "punctuated", "longest"]
)
def test_client_request_id_is_returned_and_logged(
    api: WebProcess, client: httpx.Client, api_key: str, rid: str
) -> None:
    # Unique per run, so the log lines found are this test's; at most 128 characters.
    rid = f"{rid}-{secrets.token_hex(6)}"[-128:]
    headers = {**bearer(api_key), "X-Request-ID": rid}

    ok = client.get("/sessions", headers=headers)
    failed = client.post("/chat", json={"message": "hi", "temperature": 9}, headers=headers)

    assert ok.headers["x-request-id"] == rid
    assert failed.status_code == 400
    assert failed.headers["x-request-id"] == rid
    assert failed.json()["error"]["request_id"] == rid
    lines = request_lines(api, {rid}, count=2)
    assert sorted(line["status"] for line in lines) == [200, 400]


@pytest.mark.parametrize(
    "rid",
    ["has spaces {}", "{}" + "y" * 200, '{{"injected": "{}"}}', "semi;colon-{}"],
    ids=["spaces", "200-chars", "json", "semicolon"],
)
def test_invalid_request_id_is_replaced(
    api: WebProcess, client: httpx.Client, api_key: str, rid: str
) -> None:
    # Unique per run, so finding it in the shared log would be this test's doing.
    rid = rid.format(secrets.token_hex(6))
    headers = {**bearer(api_key), "X-Request-ID": rid}

    first = client.post("/chat", json={"message": ""}, headers=headers)
    second = client.post("/chat", json={"message": ""}, headers=headers)

    assert first.status_code == second.status_code == 400
    generated = first.headers["x-request-id"]
    assert generated != rid
    assert SAFE_ID.fullmatch(generated)
    assert second.headers["x-request-id"] != generated, "a fresh id per request"
    assert first.json()["error"]["request_id"] == generated
    (line,) = request_lines(api, {generated})
    assert line["path"] == "/chat"
    assert line["status"] == 400
    assert rid not in api.logs()


def test_request_id_is_generated_when_absent(client: httpx.Client) -> None:
    first = client.get("/sessions")
    second = client.get("/sessions")

    assert first.status_code == 401
    generated = first.headers["x-request-id"]
    assert SAFE_ID.fullmatch(generated)
    assert first.json()["error"]["request_id"] == generated
    assert second.headers["x-request-id"] != generated
