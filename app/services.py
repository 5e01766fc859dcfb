"""The shared clients and services of one process, opened and closed by the app's lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from app.catalog import ModelCatalog
from app.chat import ChatService
from app.openrouter import OpenRouterClient
from app.sessions import SessionStore
from app.storage import create_redis
from app.usage import UsageInbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from litestar import Litestar
    from redis.asyncio import Redis

    from app.settings import Settings


class Services:
    """What a handler may ask for. A plain class: Litestar passes it through untouched."""

    __slots__ = ("catalog", "chat", "redis", "secret", "settings", "store")

    def __init__(
        self,
        *,
        settings: Settings,
        redis: Redis,
        store: SessionStore,
        chat: ChatService,
        catalog: ModelCatalog,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.chat = chat
        self.catalog = catalog
        self.secret = settings.session_secret.encode()


# Connections per upstream client; see OpenRouterClient for why they are many small pools.
CONNECTIONS_PER_CLIENT = 32


def create_http_clients(settings: Settings) -> list[httpx.AsyncClient]:
    count = max(1, settings.upstream_max_connections // CONNECTIONS_PER_CLIENT)
    per_client = -(-settings.upstream_max_connections // count)
    return [create_http_client(settings, per_client) for _ in range(count)]


def create_http_client(settings: Settings, max_connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.openrouter_base_url.rstrip("/") + "/",
        timeout=httpx.Timeout(
            settings.upstream_timeout_seconds,
            connect=settings.upstream_connect_timeout_seconds,
            pool=settings.upstream_connect_timeout_seconds,
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30,
        ),
        # Our requests carry the caller's key: never follow a redirect elsewhere with it.
        follow_redirects=False,
        trust_env=False,
    )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Create every client once per process; close them in reverse order."""
    redis = create_redis(
        settings.redis_url,
        timeout_seconds=settings.redis_timeout_seconds,
        max_connections=settings.redis_max_connections,
    )
    try:
        http = create_http_clients(settings)
        try:
            upstream = OpenRouterClient(
                http,
                retries=settings.upstream_retries,
                timeout_seconds=settings.upstream_timeout_seconds,
                app_url=settings.app_url,
                app_title=settings.app_title,
            )
            store = SessionStore(
                redis, ttl_ms=settings.session_ttl_ms, history_cap=settings.history_cap
            )
            yield Services(
                settings=settings,
                redis=redis,
                store=store,
                chat=ChatService(store, upstream, UsageInbox(redis), settings),
                catalog=ModelCatalog(redis, upstream, fresh_seconds=settings.models_cache_seconds),
            )
        finally:
            for client in reversed(http):
                await client.aclose()
    finally:
        await redis.aclose()


def services_lifespan(
    settings: Settings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The Litestar lifespan hook that puts `Services` on `app.state.services`."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            yield

    return lifespan
