"""GET /models: OpenRouter's list as sent, one copy in Redis for all replicas, stale on failure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from tests.standin import StandinServer
    from tests.support.processes import WebProcess

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openrouter-models.json"
# What the stand-in can be made to fail with: an error envelope, and HTML from a proxy.
FAILURES = [
    {"status": 503},
    {"status": 502, "raw_body": "<html><body>Bad gateway</body></html>"},
    {"status": 200, "raw_body": "<html><body>Maintenance</body></html>"},
]
FAILURE_IDS = ["503-json", "502-html", "200-html"]


@pytest.fixture
def upstream(standin: StandinServer) -> Iterator[StandinServer]:
    """The stand-in, serving `/models` normally again after the test whatever it scripted."""
    standin.control.fail_models(None)
    yield standin
    standin.control.fail_models(None)


@pytest.fixture
def quick_refresh(
    start_api: Callable[..., WebProcess], redis_client: redis.Redis
) -> Iterator[httpx.Client]:
    """An API whose copy of the list is fresh for one second."""
    web = start_api(MODELS_CACHE_SECONDS="1")
    with httpx.Client(base_url=web.url, timeout=30) as http:
        yield http


def upstream_calls(standin: StandinServer) -> int:
    return standin.control.stats()["models_requests"]


def get_models(http: httpx.Client, **headers: str) -> httpx.Response:
    response = http.get("/models", headers=headers)
    assert response.status_code in (200, 304), response.text
    return response


def wait_until_stale(http: httpx.Client, timeout: float = 15) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = http.get("/models")
        if response.headers.get("x-cache") == "stale":
            return response
        assert response.status_code == 200, response.text
        assert time.monotonic() < deadline, "the copy never went stale"
        time.sleep(0.1)


def test_models_need_no_auth_and_are_upstreams_list(
    client: httpx.Client, upstream: StandinServer
) -> None:
    direct = httpx.get(f"{upstream.base_url}/models", timeout=10)

    response = client.get("/models")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    # Byte for byte what upstream sent: no re-encoding, nothing added or dropped.
    assert response.content == direct.content
    body: dict[str, Any] = response.json()
    expected = json.loads(FIXTURE.read_text())
    assert body == expected
    assert list(body) == ["data"]
    assert len(body["data"]) == len(expected["data"]) == 356


def test_one_upstream_call_serves_every_replica(
    client: httpx.Client,
    start_api: Callable[..., WebProcess],
    upstream: StandinServer,
    redis_client: redis.Redis,
) -> None:
    second = start_api()
    before = upstream_calls(upstream)
    with httpx.Client(base_url=second.url, timeout=30) as other:
        bodies = []
        for http in (client, other, client, other, other, client):
            response = get_models(http)
            bodies.append(response.content)

    assert upstream_calls(upstream) - before == 1
    assert all(body == bodies[0] for body in bodies)
    # The copy is in Redis, where every replica reads it.
    assert redis_client.exists("chat:models")


def test_first_get_is_a_miss_then_hits(client: httpx.Client, upstream: StandinServer) -> None:
    first = get_models(client)
    second = get_models(client)

    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]


def test_list_is_refreshed_after_cache_seconds(
    quick_refresh: httpx.Client, upstream: StandinServer
) -> None:
    before = upstream_calls(upstream)
    fetched = time.monotonic()
    assert get_models(quick_refresh).headers["x-cache"] == "miss"
    assert upstream_calls(upstream) - before == 1

    deadline = fetched + 15
    while True:
        response = get_models(quick_refresh)
        if response.headers["x-cache"] == "miss":
            break
        assert response.headers["x-cache"] == "hit"
        assert upstream_calls(upstream) - before == 1, "a fresh copy was fetched again"
        assert time.monotonic() < deadline, "the list was never refreshed"
        time.sleep(0.1)

    assert upstream_calls(upstream) - before == 2
    # Never refreshed while fresh: at least MODELS_CACHE_SECONDS passed.
    assert time.monotonic() - fetched >= 1.0
    assert int(response.headers["cache-control"].rpartition("max-age=")[2]) <= 1


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
def test_stale_copy_is_served_when_upstream_fails(
    quick_refresh: httpx.Client, upstream: StandinServer, failure: dict[str, Any]
) -> None:
    good = get_models(quick_refresh)
    upstream.control.fail_models(failure)
    before = upstream_calls(upstream)

    stale = wait_until_stale(quick_refresh)

    assert stale.status_code == 200
    assert stale.content == good.content
    assert upstream_calls(upstream) > before, "the refresh was attempted"
    # Still stale while upstream stays down; fresh again once it is back.
    assert get_models(quick_refresh).headers["x-cache"] == "stale"
    upstream.control.fail_models(None)
    recovered = get_models(quick_refresh)
    assert recovered.headers["x-cache"] == "miss"
    assert recovered.content == good.content


@pytest.mark.parametrize("failure", FAILURES, ids=FAILURE_IDS)
def test_no_copy_and_upstream_down_is_an_error(
    client: httpx.Client,
    upstream: StandinServer,
    redis_client: redis.Redis,
    failure: dict[str, Any],
) -> None:
    upstream.control.fail_models(failure)

    response = client.get("/models")

    assert response.status_code in (502, 503, 504)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == response.status_code
    assert error["type"]
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    # A failure is not cached: nothing to serve stale later.
    assert not redis_client.exists("chat:models")


def test_upstream_503_without_a_copy_stays_503(
    client: httpx.Client, upstream: StandinServer
) -> None:
    upstream.control.fail_models({"status": 503})

    response = client.get("/models")

    assert response.status_code == 503
    assert response.json()["error"]["upstream_status"] == 503


def test_etag_and_if_none_match_give_304(client: httpx.Client, upstream: StandinServer) -> None:
    first = get_models(client)
    etag = first.headers["etag"]

    same = get_models(client, **{"If-None-Match": etag})
    other = get_models(client, **{"If-None-Match": '"not-this-one"'})

    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    assert other.status_code == 200
    assert other.content == first.content


def test_etag_is_shared_by_replicas(
    client: httpx.Client, start_api: Callable[..., WebProcess], upstream: StandinServer
) -> None:
    etag = get_models(client).headers["etag"]
    second = start_api()

    with httpx.Client(base_url=second.url, timeout=30) as other:
        response = get_models(other, **{"If-None-Match": etag})

    assert response.status_code == 304
