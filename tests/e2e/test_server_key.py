"""Server-key mode: clients send app tokens, the server's OpenRouter key goes upstream."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import pytest

from app.settings import SettingsError, load_settings
from app.tokens import parse_app_tokens
from tests.conftest import bearer
from tests.e2e.test_secrets_and_logs import (
    redis_dump,
    request_id,
    request_lines,
    response_text,
    secret_parts,
)
from tests.support.processes import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Deployment(NamedTuple):
    web: WebProcess
    server_key: str
    web_token: str  # the default limits
    mobile_token: str  # 2 turns per minute of its own


@pytest.fixture
def deployment(start_api: Callable[..., WebProcess]) -> Deployment:
    server_key = "sk-or-v1-" + secrets.token_hex(32)
    web_token, mobile_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    web = start_api(
        OPENROUTER_API_KEY=server_key,
        APP_TOKENS=f"web:{digest(web_token)}, mobile:{digest(mobile_token)}:2",
    )
    return Deployment(web, server_key, web_token, mobile_token)


def turn(http: httpx.Client, token: str, **body: Any) -> httpx.Response:
    return http.post("/chat", json={"message": "hi", **body}, headers=bearer(token))


def test_turns_reach_openrouter_with_the_server_key_only(
    deployment: Deployment, standin: StandinServer
) -> None:
    with httpx.Client(base_url=deployment.web.url, timeout=30) as http:
        first = turn(http, deployment.web_token, message="hello")
        assert first.status_code == 200, first.text
        session_id = first.json()["session_id"]
        second = turn(
            http, deployment.web_token, message="streamed", session_id=session_id, stream=True
        )
        assert second.status_code == 200
        assert '"type":"done"' in second.text
        third = http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "openai"}]},
            headers=bearer(deployment.web_token) | {"X-Session-Id": session_id},
        )
        assert third.status_code == 200, third.text
        session = http.get(f"/sessions/{session_id}", headers=bearer(deployment.web_token))

    upstream = standin.control.requests(deployment.server_key)
    assert [r["body"]["messages"][-1]["content"] for r in upstream] == [
        "hello",
        "streamed",
        "openai",
    ]
    assert all(r["headers"]["authorization"] == f"Bearer {deployment.server_key}" for r in upstream)
    assert standin.control.requests(deployment.web_token) == []
    everything = repr(standin.control.requests())
    assert deployment.web_token not in everything
    assert session.status_code == 200
    assert [m["content"] for m in session.json()["messages"]][::2] == [
        "hello",
        "streamed",
        "openai",
    ]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-configured-token",
        "Basic d2ViOnRva2Vu",
        "Bearer",
        # A caller's own OpenRouter key is not an app token: refused, never forwarded.
        "Bearer sk-or-v1-" + "ab" * 32,
    ],
    ids=["missing", "unknown", "not-bearer", "empty", "openrouter-key"],
)
def test_a_missing_or_unknown_token_is_401_on_every_route(
    deployment: Deployment, standin: StandinServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=deployment.web.url, timeout=30, headers=headers) as http:
        answers = [
            http.post("/chat", json={"message": "hi"}),
            http.post("/chat", json={"message": "hi", "stream": True}),
            http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
            ),
            http.get("/sessions"),
            http.get("/sessions/some-id"),
            http.delete("/sessions/some-id"),
        ]

    for answer in answers:
        assert answer.status_code == 401, answer.text
        error = answer.json()["error"]
        # /v1 speaks OpenAI's error shape, whose `code` is the other routes' `type`.
        assert "unauthorized" in {error.get("type"), error.get("code")}
    assert standin.control.requests(deployment.server_key) == []
    if authorization and authorization.startswith("Bearer "):
        assert standin.control.requests(authorization.removeprefix("Bearer ")) == []


def test_sessions_of_one_app_token_are_out_of_reach_of_another(
    deployment: Deployment, standin: StandinServer
) -> None:
    web, mobile = bearer(deployment.web_token), bearer(deployment.mobile_token)
    with httpx.Client(base_url=deployment.web.url, timeout=30) as http:
        session_id = turn(http, deployment.web_token, message="mine").json()["session_id"]
        calls_before = len(standin.control.requests(deployment.server_key))

        intruding = [
            http.get(f"/sessions/{session_id}", headers=mobile),
            http.delete(f"/sessions/{session_id}", headers=mobile),
            # The same id names a session of the other token's own.
            turn(http, deployment.mobile_token, message="theirs", session_id=session_id),
        ]
        listing = http.get("/sessions", headers=mobile).json()
        own = http.get(f"/sessions/{session_id}", headers=web)
        own_listing = http.get("/sessions", headers=web).json()

    assert [answer.status_code for answer in intruding] == [404, 404, 200]
    assert [s["session_id"] for s in listing["sessions"]] == [session_id]
    sent = standin.control.requests(deployment.server_key)[calls_before:]
    assert [record["body"]["messages"] for record in sent] == [
        [{"role": "user", "content": "theirs"}]
    ]
    assert own.status_code == 200
    assert [m["content"] for m in own.json()["messages"]][::2] == ["mine"]
    assert [s["session_id"] for s in own_listing["sessions"]] == [session_id]


def test_each_app_token_has_its_own_limit(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.web.url, timeout=30) as http:
        mobile = [turn(http, deployment.mobile_token) for _ in range(3)]
        web = turn(http, deployment.web_token)

    assert [answer.status_code for answer in mobile] == [200, 200, 429]
    assert {answer.headers["x-ratelimit-limit"] for answer in mobile} == {"2"}
    assert mobile[2].json()["error"]["type"] == "rate_limited"
    assert int(mobile[2].headers["retry-after"]) >= 1
    # The other token's allowance is untouched, and it has the server's default.
    assert web.status_code == 200
    assert web.headers["x-ratelimit-limit"] == "60"
    assert web.headers["x-ratelimit-remaining"] == "59"


def test_server_key_and_app_tokens_are_never_logged_stored_or_echoed(
    deployment: Deployment, standin: StandinServer, redis_client: redis.Redis
) -> None:
    responses: dict[str, httpx.Response] = {}

    def send(method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        rid = request_id()
        headers = {"X-Request-ID": rid, "Authorization": f"Bearer {token}"}
        responses[rid] = response = http.request(method, path, headers=headers, **kw)
        return response

    with httpx.Client(base_url=deployment.web.url, timeout=30) as http:
        token, mobile = deployment.web_token, deployment.mobile_token
        session_id = send("POST", "/chat", token, json={"message": "hello"}).json()["session_id"]
        more = {"message": "more", "session_id": session_id, "stream": True}
        assert send("POST", "/chat", token, json=more).status_code == 200
        standin.control.script(
            deployment.server_key,
            {"status": 401, "message": f"Key {deployment.server_key} is disabled"},
        )
        refused = send("POST", "/chat", token, json={"message": "x"})
        # Not the app token's fault: a 502, not a 401 the client would take for its own.
        assert refused.status_code == 502
        assert refused.json()["error"]["upstream_status"] == 401
        too_hot = {"message": "x", "temperature": 9}
        assert send("POST", "/chat", token, json=too_hot).status_code == 400
        for _ in range(3):
            send("POST", "/chat", mobile, json={"message": "limited"})
        assert send("GET", "/sessions", token).status_code == 200
        assert send("GET", f"/sessions/{session_id}", mobile).status_code == 404
        assert send("GET", "/sessions", f"{token} trailing").status_code == 401
        assert send("GET", "/sessions", token[:-1]).status_code == 401
        doomed = send("POST", "/chat", token, json={"message": "short-lived"}).json()["session_id"]
        assert send("DELETE", f"/sessions/{doomed}", token).status_code == 204
    assert 429 in {response.status_code for response in responses.values()}

    lines = request_lines(deployment.web, set(responses))
    # The log names the app token, never the token itself.
    assert {line.get("app") for line in lines if line["status"] != 401} == {"web", "mobile"}
    assert "refused the server's key" in deployment.web.logs()
    logs = deployment.web.logs()
    stored = redis_dump(redis_client)
    assert b"hello" in stored, "the session was stored, so the scan saw real data"
    secrets_ = [*secret_parts(deployment.server_key), token, mobile, digest(token), digest(mobile)]
    for secret in secrets_:
        assert secret not in logs
        assert secret.encode() not in stored
        for rid, response in responses.items():
            assert secret not in response_text(response), rid


def test_the_openapi_document_asks_for_an_app_token(deployment: Deployment) -> None:
    document = httpx.get(f"{deployment.web.url}/openapi.json", timeout=10).json()

    scheme = document["components"]["securitySchemes"]["OpenRouterKey"]
    assert "app token" in scheme["description"]
    assert "app token" in document["info"]["description"]


# ---- APP_TOKENS and the tokens command --------------------------------------------------------


def server_key_env(tokens: str) -> dict[str, str]:
    return {"OPENROUTER_API_KEY": "sk-or-v1-" + "0" * 64, "APP_TOKENS": tokens}


def test_app_tokens_are_read_with_their_limits() -> None:
    a, b = digest("a"), digest("b")

    settings = load_settings(server_key_env(f" web:{a}:5 , mobile:{b}::1000,"))

    assert settings.server_key_mode
    read = [(t.name, t.digest, t.turns_per_minute, t.tokens_per_day) for t in settings.app_tokens]
    assert read == [("web", a, 5, None), ("mobile", b, None, 1000)]


@pytest.mark.parametrize(
    ("tokens", "complaint"),
    [
        ("web", "entry 1 ('web'): expected name:sha256hex"),
        (f"web:{digest('a')},app:1234", "entry 2 ('app'): the digest must be 64 lowercase hex"),
        (f"web:{digest('a').upper()}", "the digest must be 64 lowercase hex"),
        (f"w b:{digest('a')}", "entry 1: the name must match"),
        (f"web:{digest('a')}:fast", "turns_per_minute must be a whole number"),
        (f"web:{digest('a')}:1:-5", "tokens_per_day must be a whole number"),
        (f"web:{digest('a')}:1:2:-3", "usd_per_day must be an amount of USD"),
        (f"web:{digest('a')}:1:2:nan", "usd_per_day must be an amount of USD"),
        (f"web:{digest('a')}:1:2:3:4", "expected name:sha256hex"),
        (f"web:{digest('a')},web:{digest('b')}", "two entries have the same name"),
        (f"web:{digest('a')},app:{digest('a')}", "two entries have the same digest"),
        ("", "APP_TOKENS is required when OPENROUTER_API_KEY is set"),
    ],
)
def test_a_malformed_app_tokens_entry_is_named(tokens: str, complaint: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(server_key_env(tokens))

    assert complaint in str(raised.value)
    assert digest("a") not in str(raised.value)


def test_app_tokens_without_a_server_key_are_refused() -> None:
    with pytest.raises(SettingsError, match="APP_TOKENS is set but OPENROUTER_API_KEY is not"):
        load_settings({"APP_TOKENS": f"web:{digest('a')}"})


def test_a_malformed_entry_stops_the_process_at_start(start_api: Callable[..., WebProcess]) -> None:
    with pytest.raises(RuntimeError, match="web exited at start") as raised:
        start_api(**server_key_env("web:not-a-digest"))

    assert "APP_TOKENS: entry 1 ('web'): the digest must be" in str(raised.value)


def test_settings_repr_hides_the_server_key() -> None:
    settings = load_settings(server_key_env(f"web:{digest('a')}"))

    assert "0" * 64 not in repr(settings)
    assert "0" * 64 not in repr([settings])


def tokens_command(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "chat-backend"), "token", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=30,
    )


def test_the_tokens_command_hashes_a_token_from_stdin() -> None:
    done = tokens_command("hash", stdin="my-token\n")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == digest("my-token")


def test_the_tokens_command_makes_a_token_and_its_entry() -> None:
    done = tokens_command("new", "web")

    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    token = lines["token (give it to the client)"].strip()
    (entry,) = parse_app_tokens(lines["APP_TOKENS entry"].strip())
    assert entry.name == "web"
    assert entry.digest == digest(token)
    assert len(token) >= 40


def test_the_tokens_command_refuses_bad_usage() -> None:
    assert tokens_command("hash").returncode == 2
    assert tokens_command("new", "bad name").returncode == 2
    assert "usage" in tokens_command().stderr
