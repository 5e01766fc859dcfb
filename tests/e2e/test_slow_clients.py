"""Clients that send their body too slowly: cut off with 408 at BODY_READ_TIMEOUT_SECONDS."""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import bearer

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

BODY_TIMEOUT = 2.0
# Far longer than the deadline, far shorter than the trickle would take to finish.
GIVE_UP = 30.0


@pytest.fixture
def web(start_api: Callable[..., WebProcess], redis_client: redis.Redis) -> WebProcess:
    return start_api(BODY_READ_TIMEOUT_SECONDS=str(BODY_TIMEOUT))


def connect(web: WebProcess) -> socket.socket:
    url = urlsplit(web.url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(key: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n\r\n"
    ).encode()


def read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (or the time runs out)."""
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open; it sent {received!r}")


def trickle(sock: socket.socket, data: bytes, pause: float, until: float) -> bool:
    """Send `data` a byte at a time; False once the server has closed the connection."""
    for byte in data:
        if time.monotonic() > until:
            return True
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(pause)
    return True


def status_and_body(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_sent_byte_by_byte_is_cut_off_with_408(
    web: WebProcess,
    redis_client: redis.Redis,
    standin: StandinServer,
    api_key: str,
    framing: str,
) -> None:
    body = json.dumps({"message": "x" * 400}).encode()
    payload = body if framing == "content-length" else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    started = time.monotonic()
    with connect(web) as sock:
        sock.sendall(head(api_key, len(body) if framing == "content-length" else None))
        # At 20 bytes a second the body would take over 20 s: the server must not wait for it.
        trickle(sock, payload, 0.05, until=started + BODY_TIMEOUT + 3)
        raw = read_until_closed(sock, GIVE_UP)

    status, headers, error_body = status_and_body(raw)
    assert status == 408, raw
    assert headers["connection"] == "close"
    error = error_body["error"]
    assert isinstance(error, dict)
    assert error["type"] == "request_timeout"
    assert error["request_id"] == headers["x-request-id"]
    assert redis_client.dbsize() == 0
    assert standin.control.requests(api_key) == []


def test_client_that_stops_sending_is_cut_off(
    web: WebProcess, redis_client: redis.Redis, api_key: str
) -> None:
    with connect(web) as sock:
        sock.sendall(head(api_key, 100) + b'{"message": "hel')
        raw = read_until_closed(sock, GIVE_UP)

    assert status_and_body(raw)[0] == 408, raw
    assert redis_client.dbsize() == 0


def test_slow_clients_do_not_hold_up_others(web: WebProcess, api_key: str) -> None:
    socks = [connect(web) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(head(api_key, 100) + b"{")
        # While they hang, the API answers a whole turn.
        with httpx.Client(base_url=web.url, timeout=10) as http:
            turn = http.post("/chat", json={"message": "am I served?"}, headers=bearer(api_key))
        assert turn.status_code == 200, turn.text
        for sock in socks:
            assert status_and_body(read_until_closed(sock, GIVE_UP))[0] == 408
    finally:
        for sock in socks:
            sock.close()


def test_slow_body_within_the_deadline_is_served(web: WebProcess, api_key: str) -> None:
    body = json.dumps({"message": "slow but in time"}).encode()
    with connect(web) as sock:
        sock.sendall(head(api_key, len(body)))
        for start in range(0, len(body), 8):
            sock.sendall(body[start : start + 8])
            time.sleep(0.05)
        sock.settimeout(GIVE_UP)
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, raw
            raw += chunk

    status, _, answer = status_and_body(raw)
    assert status == 200, raw
    assert answer["response"] == "Echo 1: slow but in time"
