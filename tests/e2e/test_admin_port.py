"""ADMIN_PORT: /admin/* and /metrics on a port of their own, and a 404 on the public one.

Also the contract test of what app/cli/serve.py uses of uvicorn beyond `uvicorn.run`:
`Config.bind_socket`, `Server.run(sockets=...)` and `Multiprocess(config, sockets=...)`, with one
process and with two.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import httpx
import pytest

from app.turns.callers import owner_id
from tests.conftest import SESSION_SECRET, bearer
from tests.e2e.test_worker import chat
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

    from tests.support.processes import WebProcess

TOKEN = "admin-" + secrets.token_hex(16)
OPERATOR_REQUESTS = [
    ("GET", "/metrics"),
    ("GET", "/metrics/"),
    ("GET", "/admin/stats"),
    ("GET", "/admin/sessions"),
    ("GET", f"/admin/sessions/{'0' * 32}/some-session"),
    ("DELETE", f"/admin/sessions/{'0' * 32}/some-session"),
    ("OPTIONS", "/metrics"),
    ("OPTIONS", "/admin/stats"),
]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_operator_routes_answer_on_the_admin_port_and_404_on_the_public_one(
    start_api: Callable[..., WebProcess],
    redis_client: redis.Redis,
    api_key: str,
    processes: str,
) -> None:
    admin_port = free_port()
    web = start_api(ADMIN_PORT=str(admin_port), ADMIN_TOKEN=TOKEN, WEB_CONCURRENCY=processes)
    admin_url = f"http://127.0.0.1:{admin_port}"
    with (
        httpx.Client(base_url=web.url, timeout=10) as public,
        httpx.Client(base_url=admin_url, timeout=10) as admin,
    ):
        session_id = chat(public, api_key, "hello")["session_id"]
        owner = owner_id(api_key, SESSION_SECRET.encode())
        # Several of each: with two processes, a request may land on either.
        for _ in range(4):
            # The admin port: the operators' routes, and /health.
            stats = admin.get("/admin/stats", headers=bearer(TOKEN))
            assert stats.status_code == 200, stats.text
            found = admin.get(f"/admin/sessions/{owner}/{session_id}", headers=bearer(TOKEN))
            assert found.status_code == 200, found.text
            metrics = admin.get("/metrics")
            assert metrics.status_code == 200
            assert "chat_http_requests_total" in metrics.text
            assert admin.get("/health").status_code == 200
            # Still behind the admin token there.
            assert admin.get("/admin/stats").status_code == 401

            # The public port: as if they did not exist, token or not, in any spelling.
            for method, path in OPERATOR_REQUESTS:
                response = public.request(method, path, headers=bearer(TOKEN))
                assert response.status_code == 404, (method, path, response.text)
                if method != "OPTIONS":
                    assert response.json()["error"]["type"] == "not_found"
            assert public.get("/health").status_code == 200

            # And the API is the public port's alone.
            assert public.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 200
            assert admin.get(f"/sessions/{session_id}", headers=bearer(api_key)).status_code == 404
            assert admin.get("/models").status_code == 404
            assert admin.get("/docs").status_code == 404
            refused = admin.post("/chat", json={"message": "hi"}, headers=bearer(api_key))
            assert refused.status_code == 404


def test_without_admin_port_the_operator_routes_stay_on_the_public_port(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> None:
    web = start_api(ADMIN_TOKEN=TOKEN)
    with httpx.Client(base_url=web.url, timeout=10) as public:
        assert public.get("/admin/stats", headers=bearer(TOKEN)).status_code == 200
        assert public.get("/metrics").status_code == 200
