"""CORS: browsers on the configured origins may call the API; others get no CORS grant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import bearer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.support.processes import WebProcess

ALLOWED = "https://app.example"
ALSO_ALLOWED = "https://admin.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture
def restricted(start_api: Callable[..., WebProcess]) -> Iterator[httpx.Client]:
    web = start_api(CORS_ORIGINS=f"{ALLOWED}, {ALSO_ALLOWED}")
    with httpx.Client(base_url=web.url, timeout=10) as http:
        yield http


def header_set(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


def assert_preflight_granted(response: httpx.Response, origin: str) -> None:
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["access-control-allow-origin"] in (origin, "*")
    assert "post" in header_set(response.headers["access-control-allow-methods"])
    allowed_headers = header_set(response.headers["access-control-allow-headers"])
    assert {"authorization", "content-type"} <= allowed_headers


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
def test_preflight_from_an_allowed_origin_succeeds(restricted: httpx.Client, origin: str) -> None:
    response = restricted.options("/chat", headers={"Origin": origin, **PREFLIGHT})

    assert_preflight_granted(response, origin)
    # With a list of origins, the grant names the caller's origin, not a wildcard.
    assert response.headers["access-control-allow-origin"] == origin


def test_preflight_from_a_disallowed_origin_gets_no_grant(restricted: httpx.Client) -> None:
    response = restricted.options("/chat", headers={"Origin": "https://evil.example", **PREFLIGHT})

    assert "access-control-allow-origin" not in response.headers


def test_actual_request_from_an_allowed_origin_exposes_the_request_id(
    restricted: httpx.Client, api_key: str
) -> None:
    response = restricted.get("/sessions", headers={"Origin": ALLOWED, **bearer(api_key)})

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in header_set(response.headers["access-control-expose-headers"])


def test_a_turn_exposes_its_rate_limit_headers(restricted: httpx.Client, api_key: str) -> None:
    response = restricted.post(
        "/chat", json={"message": "hi"}, headers={"Origin": ALLOWED, **bearer(api_key)}
    )

    assert response.status_code == 200
    assert "x-ratelimit-remaining" in response.headers
    exposed = header_set(response.headers["access-control-expose-headers"])
    assert {
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    } <= exposed


def test_actual_request_from_a_disallowed_origin_gets_no_grant(
    restricted: httpx.Client, api_key: str
) -> None:
    response = restricted.get(
        "/sessions", headers={"Origin": "https://evil.example", **bearer(api_key)}
    )

    assert "access-control-allow-origin" not in response.headers


def test_default_settings_allow_any_origin(client: httpx.Client) -> None:
    response = client.options("/chat", headers={"Origin": "http://localhost:3000", **PREFLIGHT})

    assert_preflight_granted(response, "http://localhost:3000")
