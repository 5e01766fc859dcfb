"""Shared fixtures: a real Redis, the OpenRouter stand-in, and the API as real processes."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from tests.standin import StandinServer
from tests.support.processes import WebProcess
from tests.support.redis_cluster import RedisClusterServer
from tests.support.redis_server import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SESSION_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when given (its database is flushed by the tests), else a server of our own."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with RedisServer() as server:
        yield server.url


class Store:
    """Where the API keeps its state in a test: one Redis (`REDIS_URL`), or a Redis Cluster
    with a standalone Redis beside it for the worker's queue."""

    def __init__(self, url: str, *, cluster: bool = False, queue_url: str = "") -> None:
        self.url = url
        self.cluster = cluster
        self.queue_url = queue_url or url

    def env(self) -> dict[str, str]:
        if not self.cluster:
            return {"REDIS_URL": self.url}
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "true", "QUEUE_REDIS_URL": self.queue_url}

    def client(self) -> Any:
        """A client of the store: `redis.Redis`, or `redis.RedisCluster` on a cluster."""
        if self.cluster:
            return redis.RedisCluster.from_url(self.url.split(",")[0])
        return redis.Redis.from_url(self.url)

    def flush(self) -> None:
        with self.client() as client:
            client.flushdb()  # on a cluster, every master's
        if self.cluster:
            with redis.Redis.from_url(self.queue_url) as queue:
                queue.flushdb()

    def __repr__(self) -> str:
        return "cluster" if self.cluster else "standalone"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[tuple[RedisClusterServer, RedisServer]]:
    """A real Redis Cluster (three masters, three replicas), and a Redis for the queue."""
    with RedisClusterServer() as cluster, RedisServer() as queue:
        yield cluster, queue


@pytest.fixture(scope="session")
def store(request: pytest.FixtureRequest, redis_url: str) -> Store:
    """One Redis; in the modules marked `stores`, each of the stores it names in turn."""
    if getattr(request, "param", "standalone") == "cluster":
        cluster, queue = request.getfixturevalue("redis_cluster")
        return Store(cluster.url, cluster=True, queue_url=queue.url)
    return Store(redis_url)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`pytest.mark.stores("standalone", "cluster")`: the module's tests run on each."""
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is not None and "store" in metafunc.fixturenames:
        metafunc.parametrize("store", marker.args, indirect=True, scope="session")


@pytest.fixture
def redis_client(store: Store) -> Iterator[Any]:
    """A client of the store, emptied at the start of the test."""
    store.flush()
    client = store.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def api_key() -> str:
    """A fresh key per test, so the stand-in's scripts and records never cross tests."""
    return "sk-or-v1-" + secrets.token_hex(32)


def base_env(store: Store | str, standin: StandinServer) -> dict[str, str]:
    """The API's settings in the tests, on `store` (a Store, or one Redis's URL)."""
    return {
        "APP_ENV": "production",
        "SESSION_SECRET": SESSION_SECRET,
        **(store if isinstance(store, Store) else Store(store)).env(),
        "OPENROUTER_BASE_URL": standin.base_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "UPSTREAM_TIMEOUT_SECONDS": "5",
        # Every test sends from 127.0.0.1, and many fail to authenticate on purpose: under one
        # address they would add up. The limit is tested where it is the subject
        # (tests/e2e/test_auth_failures.py).
        "AUTH_FAILURES_PER_MINUTE": "0",
    }


@pytest.fixture(scope="session")
def api(store: Store, standin: StandinServer) -> Iterator[WebProcess]:
    """The API with default settings, started as the Procfile's `web:` entry."""
    with WebProcess(base_env(store, standin), free_port()) as web:
        yield web


@pytest.fixture
def start_api(store: Store, standin: StandinServer) -> Iterator[Callable[..., WebProcess]]:
    """Start the API with settings of the test's own (environment variable names)."""
    started: list[WebProcess] = []

    def start(**env: str) -> WebProcess:
        web = WebProcess({**base_env(store, standin), **env}, free_port())
        started.append(web)
        web.start()
        return web

    yield start
    for web in started:
        web.close()


@pytest.fixture
def client(api: WebProcess, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    """An HTTP client on the shared API; Redis is empty at the start of each test."""
    with httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
