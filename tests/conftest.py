"""Shared fixtures: a real Redis, the OpenRouter stand-in, and the API as real processes."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import httpx
import pytest
import redis

from tests.standin import StandinServer
from tests.support.processes import WebProcess
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


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
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


def base_env(redis_url: str, standin: StandinServer) -> dict[str, str]:
    return {
        "APP_ENV": "production",
        "SESSION_SECRET": SESSION_SECRET,
        "REDIS_URL": redis_url,
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
def api(redis_url: str, standin: StandinServer) -> Iterator[WebProcess]:
    """The API with default settings, started as the Procfile's `web:` entry."""
    with WebProcess(base_env(redis_url, standin), free_port()) as web:
        yield web


@pytest.fixture
def start_api(redis_url: str, standin: StandinServer) -> Iterator[Callable[..., WebProcess]]:
    """Start the API with settings of the test's own (environment variable names)."""
    started: list[WebProcess] = []

    def start(**env: str) -> WebProcess:
        web = WebProcess({**base_env(redis_url, standin), **env}, free_port())
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
