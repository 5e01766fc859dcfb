"""The shared clients and services of one process, opened and closed by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from app.http.drain import Drain
from app.ops import tally
from app.store.auth_failures import AuthFailures
from app.store.client import StoreRedis, create_redis
from app.store.limits import Guard, RateLimiter
from app.store.sessions import SessionStore
from app.store.usage import UsageInbox
from app.turns.callers import Authenticator
from app.turns.catalog import ModelCatalog, named_models
from app.turns.service import ChatService
from app.upstream.setup import create_transport, openrouter_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from litestar import Litestar

    from app.settings import Settings


logger = logging.getLogger("app")

# How long a starting process waits for OpenRouter's catalogue, to check the models it names.
CATALOGUE_CHECK_SECONDS = 5.0
# How long a stopping process waits for the writes of requests it cut short.
LATE_WRITES_SECONDS = 5.0
# The least time between two reads of the catalogue for the metrics' labels.
LABELS_REFRESH_MIN_SECONDS = 60


class Services:
    """What a handler may ask for. A plain class: Litestar passes it through untouched."""

    __slots__ = (
        "auth",
        "auth_failures",
        "catalog",
        "chat",
        "drain",
        "redis",
        "settings",
        "store",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        redis: StoreRedis,
        store: SessionStore,
        chat: ChatService,
        catalog: ModelCatalog,
        auth_failures: AuthFailures,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.chat = chat
        self.catalog = catalog
        self.auth = Authenticator(settings)
        self.auth_failures = auth_failures
        self.drain = Drain(settings.shutdown_drain_seconds)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Create every client once per process; close them in reverse order."""
    redis = create_redis(
        settings.redis_url,
        timeout_seconds=settings.redis_timeout_seconds,
        max_connections=settings.redis_max_connections,
        cluster=settings.redis_cluster,
    )
    try:
        transport = create_transport(settings)
        try:
            upstream = openrouter_client(settings, transport)
            store = SessionStore(
                redis,
                ttl_ms=settings.session_ttl_ms,
                history_cap=settings.history_cap,
                wait_replicas=settings.redis_wait_replicas,
            )
            catalog = ModelCatalog(
                redis,
                upstream,
                fresh_seconds=settings.models_cache_seconds,
                named=named_models(settings),
            )
            auth_failures = AuthFailures(
                redis,
                refused_key_seconds=settings.refused_key_seconds,
                per_minute=settings.auth_failures_per_minute,
            )
            guard = Guard(settings.refused_key_seconds, settings.auth_failures_per_minute)
            chat = ChatService(
                store,
                upstream,
                UsageInbox(redis),
                RateLimiter(redis, guard),
                auth_failures,
                settings,
                catalog,
            )
            try:
                yield Services(
                    settings=settings,
                    redis=redis,
                    store=store,
                    chat=chat,
                    catalog=catalog,
                    auth_failures=auth_failures,
                )
            finally:
                await chat.drain(LATE_WRITES_SECONDS)
                tally.flush()  # the metrics of the last second, before the process ends
        finally:
            await transport.aclose()
    finally:
        await redis.aclose()


# Young objects, net of those freed, between collections of the youngest generation.
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_collector() -> None:
    """Keep Python's cyclic collector off the hot path of a serving process.

    - What startup made (modules, routes, clients) lives as long as the process: frozen, a
      full collection no longer walks it (about 50 ms each, every few seconds under load).
    - The requests in flight hold thousands of live objects, so the count that triggers a
      collection of the youngest generation (700 by default) crosses its threshold every
      few dozen turns, each time to walk objects that are all still in use. Turns free what
      they make: their count comes back down, and at 10,000 a collection is rare.
    """
    gc.collect()  # startup's garbage first: frozen objects are never collected
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def services_lifespan(
    settings: Settings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The Litestar lifespan hook that puts `Services` on `app.state.services`."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            # Bounded: a start never waits long for OpenRouter, whose absence is logged.
            try:
                async with asyncio.timeout(CATALOGUE_CHECK_SECONDS):
                    await services.catalog.check_named_models()
            except TimeoutError:
                logger.warning(
                    "OpenRouter's model catalogue did not arrive in time at start: the models "
                    "the settings name are checked at its first refresh"
                )
            refresh = asyncio.ensure_future(
                services.catalog.keep_labels_fresh(
                    max(settings.models_cache_seconds, LABELS_REFRESH_MIN_SECONDS)
                )
            )
            tune_collector()
            services.drain.install()
            try:
                yield
            finally:
                refresh.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresh

    return lifespan
