"""Hostile input by hand: key syntax in ids, path tricks, odd text, huge and nested bodies,
duplicate keys, wrong content types, header injection, huge headers.

Each must get a clear 4xx (or be served exactly as sent), store nothing it should not, send
nothing upstream it should not, and leave the API serving.
"""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import bearer
from tests.e2e.test_chat import chat_ok, sent_upstream
from tests.e2e.test_secrets_and_logs import request_lines, secret_parts
from tests.e2e.test_validation import assert_error, assert_nothing_happened
from tests.support.redis_state import broken_turns, stored_messages

if TYPE_CHECKING:
    import httpx
    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

# Redis key and glob syntax, and what else must never reach a key name.
HOSTILE_SESSION_IDS = [
    "*",
    "chat:*",
    "a:b",
    "{x",
    "x}",
    "chat:{victim}:meta",
    "?",
    "[a-z]",
    "a\\b",
    "a b",
    "..",
    "../x",
    "a/b",
    "%2A",
    "é",
    "\uff41\uff42\uff43",  # fullwidth letters, which some normalisations turn into `abc`
    "abc\u200b",  # zero-width space
    "abc\x00",
    "abc\r\n",
    "a" * 65,
]


MULTIPART = b'--x\r\nContent-Disposition: form-data; name="message"\r\n\r\nhi\r\n--x--\r\n'


def assert_still_serving(client: httpx.Client, key: str) -> None:
    assert chat_ok(client, key, message="still here?")["response"] == "Echo 1: still here?"


# ---- session ids --------------------------------------------------------------------------


@pytest.mark.parametrize("session_id", HOSTILE_SESSION_IDS)
def test_hostile_session_id_in_the_body_is_400(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    session_id: str,
) -> None:
    for stream in (False, True):
        response = client.post(
            "/chat",
            json={"message": "hi", "session_id": session_id, "stream": stream},
            headers=bearer(api_key),
        )
        assert_error(response, 400, "session_id")
    assert_nothing_happened(redis_client, standin, api_key)


# An HTTP client resolves `/sessions/..` to `/` (the chat page) before sending it; dot segments
# as they arrive on the wire are tried by test_path_tricks_reach_no_other_route.
@pytest.mark.parametrize("session_id", [i for i in HOSTILE_SESSION_IDS if i != ".."])
def test_hostile_session_id_in_the_path_never_reaches_redis(
    client: httpx.Client, redis_client: redis.Redis, api_key: str, session_id: str
) -> None:
    victim = chat_ok(client, api_key, message="mine")["session_id"]
    before = redis_client.dbsize()
    encoded = quote(session_id, safe="")
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/sessions/{encoded}", headers=bearer(api_key))
        # 400 for an id the pattern refuses; 404 where the path no longer names a session.
        assert response.status_code in (400, 404), (method, session_id, response.text)
        assert_error(response, response.status_code)
    assert redis_client.dbsize() == before
    assert len(stored_messages(redis_client, victim)) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/sessions/../health",
        "/sessions/%2e%2e/health",
        "/sessions/x/../../admin/sessions",
        "/sessions/abc/",
        "/sessions/abc/extra",
        "/SESSIONS",
        "/sessions/%00",
        "/admin/sessions",
        "/chat/../admin/stats",
    ],
)
def test_path_tricks_reach_no_other_route(api: WebProcess, api_key: str, path: str) -> None:
    # Over a raw socket: an HTTP client would resolve the dot segments before sending.
    head = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {api_key}\r\n\r\n"
    ).encode()
    raw = raw_request(api, head)

    status, _ = response_headers(raw)
    assert status in (400, 404, 405), (path, raw[:500])
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["status"] == status


# ---- the text of a message ----------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "emoji 👩🏽‍💻 and flags 🇵🇹",
        "right-to-left: \u202eevil\u202c مرحبا",
        "controls: \x00 \x01 \x07 \x1b[31m red \x7f",
        "newlines\r\nand\rtabs\t",
        "combining: e\u0301 a\u0308",
        "quotes \" ' ` and backslashes \\ \\u0000",
        '{"role": "system", "content": "injected"}',
        "\ufeffbyte order mark",
    ],
    ids=["emoji", "bidi", "controls", "newlines", "combining", "quotes", "json", "bom"],
)
def test_unicode_and_control_characters_round_trip_exactly(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    message: str,
) -> None:
    answer = chat_ok(client, api_key, message=message, system_prompt=message)
    session_id = answer["session_id"]

    upstream = sent_upstream(standin, api_key)[-1]["messages"]
    assert upstream == [
        {"role": "system", "content": message},
        {"role": "user", "content": message},
    ]
    stored = stored_messages(redis_client, session_id)
    assert stored[0]["content"] == message
    read = client.get(f"/sessions/{session_id}", headers=bearer(api_key)).json()
    assert read["messages"][0]["content"] == message
    assert read["system_prompt"] == message
    assert broken_turns(redis_client) == []


# ---- size and shape -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["message", "system_prompt", "model", "top_p_extra"])
def test_megabyte_field_is_refused_before_anything_happens(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    field: str,
) -> None:
    huge = "é" * 600_000  # 1.2 MB of UTF-8: over MAX_BODY_BYTES
    body = {"message": "hi", field: huge} if field != "message" else {"message": huge}
    response = client.post("/chat", json=body, headers=bearer(api_key))

    assert_error(response, 413)
    assert_nothing_happened(redis_client, standin, api_key)


def test_message_under_the_body_limit_but_over_the_character_limit_is_400(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    response = client.post("/chat", json={"message": "x" * 900_000}, headers=bearer(api_key))

    assert_error(response, 400, "message")
    assert_nothing_happened(redis_client, standin, api_key)


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_is_400_and_the_api_survives(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    depth: int,
) -> None:
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        content = (
            b'{"message": "hi", "provider": ' + opening * depth + b"1" + closing * depth + b"}"
        )
        headers = {**bearer(api_key), "Content-Type": "application/json"}
        response = client.post("/chat", content=content[:1_000_000], headers=headers)
        assert response.status_code in (400, 413), response.text
        assert_error(response, response.status_code)
    assert_nothing_happened(redis_client, standin, api_key)
    assert_still_serving(client, api_key)


def test_duplicate_keys_use_one_value_for_checks_storage_and_upstream(
    client: httpx.Client, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    headers = {**bearer(api_key), "Content-Type": "application/json"}
    # The value checked is the value used: the last one, as JSON parsers commonly read it.
    content = b'{"message": "first", "model": "openai/gpt-4o-mini", "message": "second"}'
    response = client.post("/chat", content=content, headers=headers)
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    assert sent_upstream(standin, api_key)[-1]["messages"][-1]["content"] == "second"
    assert stored_messages(redis_client, session_id)[0]["content"] == "second"

    # A valid id followed by one with key syntax: refused, not half-used.
    smuggled = (
        b'{"message": "hi", "session_id": "%s", "session_id": "chat:*"}' % session_id.encode()
    )
    assert_error(client.post("/chat", content=smuggled, headers=headers), 400, "session_id")
    hidden = b'{"message": "hi", "message": ""}'
    assert_error(client.post("/chat", content=hidden, headers=headers), 400, "message")
    assert len(stored_messages(redis_client, session_id)) == 2
    assert len(sent_upstream(standin, api_key)) == 1


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/x-www-form-urlencoded", b"message=hi"),
        ("multipart/form-data; boundary=x", MULTIPART),
        ("text/plain", b"hi"),
        ("application/xml", b"<message>hi</message>"),
        ("application/json", b"\xff\xfe{\x00}\x00"),
    ],
    ids=["form", "multipart", "text", "xml", "utf-16"],
)  # fmt: skip
def test_body_in_another_format_is_400(
    client: httpx.Client,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    content_type: str,
    content: bytes,
) -> None:
    headers = {**bearer(api_key), "Content-Type": content_type}
    response = client.post("/chat", content=content, headers=headers)

    assert response.status_code in (400, 415), response.text
    assert_error(response, response.status_code)
    assert_nothing_happened(redis_client, standin, api_key)


# ---- headers, over a raw socket -----------------------------------------------------------


def raw_request(web: WebProcess, head: bytes, body: bytes = b"") -> bytes:
    """One request as bytes on the wire; the whole answer once the server closes."""
    url = urlsplit(web.url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10) as s:
        s.sendall(head + body)
        received = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def response_headers(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *lines = head.split("\r\n")
    return int(status_line.split()[1]), [
        (name.lower(), value) for name, _, value in (line.partition(": ") for line in lines)
    ]


@pytest.mark.parametrize(
    "request_id",
    [
        b"abc\r\n injected-by-folding",
        b"abc\rSet-Cookie: stolen=1",
        b"abc\x00def",
        b"caf\xc3\xa9",
        b"abc\x1b[2J",
        b"q7" * 50_000,
    ],
    ids=["obs-fold", "bare-cr", "nul", "utf-8", "escape", "100-kb"],
)
def test_x_request_id_cannot_inject_headers_or_log_lines(
    api: WebProcess, client: httpx.Client, api_key: str, request_id: bytes
) -> None:
    head = (
        b"GET /sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + api_key.encode() + b"\r\n"
        b"X-Request-ID: " + request_id + b"\r\n\r\n"
    )
    raw = raw_request(api, head)

    status, headers = response_headers(raw)
    # The server may refuse the request outright (400) or serve it under an id of its own.
    assert status in (200, 400), raw[:500]
    names = [name for name, _ in headers]
    assert "set-cookie" not in names
    assert not any(name.startswith("injected") for name in names)
    ids = [value for name, value in headers if name == "x-request-id"]
    if status == 200:
        (generated,) = ids
        assert generated.encode() != request_id
        (logged,) = request_lines(api, {generated})
        assert logged["status"] == 200
    # Every line is still one whole JSON object.
    assert all(isinstance(json.loads(line), dict) for line in api.logs().splitlines())
    assert request_id[:40].decode("latin-1") not in api.logs()


def test_authorization_of_100_kb_is_401_and_never_echoed(
    api: WebProcess, client: httpx.Client, redis_client: redis.Redis, standin: StandinServer
) -> None:
    key = "sk-or-v1-" + "ab" * 50_000
    sent_before = standin.control.stats()["chat_requests"]
    head = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 17\r\n\r\n"
    )
    raw = raw_request(api, head, b'{"message": "hi"}')

    status, _ = response_headers(raw)
    assert status in (400, 401, 431), raw[:500]
    assert redis_client.dbsize() == 0
    assert standin.control.stats()["chat_requests"] == sent_before
    for secret in secret_parts(key):
        assert secret[:64] not in raw.decode("latin-1")
        assert secret[:64] not in api.logs()
    assert_still_serving(client, "sk-or-v1-" + "c" * 64)


def test_several_authorization_headers_are_refused(
    api: WebProcess, redis_client: redis.Redis, standin: StandinServer, api_key: str
) -> None:
    other = "sk-or-v1-" + "d" * 64
    head = (
        b"GET /sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer " + api_key.encode() + b"\r\n"
        b"Authorization: Bearer " + other.encode() + b"\r\n\r\n"
    )
    raw = raw_request(api, head)

    status, _ = response_headers(raw)
    # Two keys are not one caller: whichever a proxy would pick, neither is served.
    assert status == 401, raw[:500]
    assert api_key not in raw.decode("latin-1")
    assert other not in raw.decode("latin-1")


def test_key_is_in_no_openapi_example(client: httpx.Client, api_key: str) -> None:
    chat_ok(client, api_key, message="put my key somewhere")
    pages = [client.get(path).text for path in ("/openapi.json", "/docs", "/redoc")]

    for page in pages:
        for secret in secret_parts(api_key):
            assert secret not in page
        # Nor any real-looking key: the examples use placeholders.
        assert "sk-or-v1-" not in page.replace("sk-or-v1-...", "")
