"""The model list: one copy in Redis shared by every replica, refreshed by one of them at a time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from redis.exceptions import RedisError

from app.clock import now_ms
from app.errors import AppError
from app.store import keys
from app.store.client import awaited
from app.turns.labels import ModelLabels
from app.turns.pricing import PriceBook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from app.settings import Settings
    from app.store.client import StoreRedis
    from app.upstream.client import OpenRouterClient

logger = logging.getLogger("app.catalog")

REFRESH_LOCK_MS = 15_000


class ModelList(msgspec.Struct, frozen=True):
    """The list as OpenRouter sent it, with the age of this copy."""

    body: bytes
    etag: str
    fetched_at_ms: int
    source: Literal["hit", "miss", "stale"]

    def max_age(self, fresh_for_seconds: int) -> int:
        return max(0, fresh_for_seconds - (now_ms() - self.fetched_at_ms) // 1000)


def _etag(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


class _ModelList(msgspec.Struct, frozen=True):
    data: list[dict[str, Any]]


_models_decoder = msgspec.json.Decoder(_ModelList)
_encoder = msgspec.json.Encoder()


def openai_model_list(body: bytes) -> bytes:
    """OpenRouter's list in OpenAI's shape: every field of each model kept, and OpenAI's
    `object`, `created` and `owned_by` (the id's vendor part) where it lacks them."""
    models = _models_decoder.decode(body).data
    return _encoder.encode(
        {
            "object": "list",
            "data": [
                {
                    "created": 0,
                    "owned_by": str(model.get("id", "")).partition("/")[0],
                    **model,
                    "object": "model",
                }
                for model in models
            ],
        }
    )


def named_models(settings: Settings) -> dict[str, str]:
    """The model ids the settings name, each with the setting that names it."""
    named = {settings.openrouter_default_model: "OPENROUTER_DEFAULT_MODEL"}
    for old, new in settings.model_aliases.items():
        named.setdefault(new, f"MODEL_ALIASES ({old}={new})")
    return named


class ModelCatalog:
    """`GET /models` behind a shared cache; a stale copy is better than an error.

    Each copy fetched from OpenRouter is checked against the model ids the settings name
    (`named`): one the catalogue lacks would fail every turn sent to it, and is logged. Each
    copy this process reads gives `labels` the models the metrics name.
    """

    def __init__(
        self,
        redis: StoreRedis,
        upstream: OpenRouterClient,
        *,
        fresh_seconds: int,
        named: Mapping[str, str] | None = None,
    ) -> None:
        self._redis = redis
        self._upstream = upstream
        self._fresh_ms = fresh_seconds * 1000
        self._named = dict(named or {})
        # The last body this process read, so a fresh hit moves a few bytes, not ~0.5 MB.
        self._local: ModelList | None = None
        # The same copy in OpenAI's shape (its etag, the body): converted once per copy.
        self._openai: tuple[str, bytes] | None = None
        # Its prices (its etag, the book, ms when the copy was last checked to be current).
        self._prices: tuple[str, PriceBook, int] | None = None
        self.labels = ModelLabels()

    async def check_named_models(self) -> None:
        """At start: the catalogue as OpenRouter has it now, checked (not stored: the shared
        copy is refreshed as it always is); without OpenRouter, the shared copy gives the
        labels."""
        try:
            body = await self._fetch()
        except AppError as exc:
            logger.warning(
                "could not read OpenRouter's model catalogue at start",
                extra={"fields": {"error": exc.message}},
            )
            with contextlib.suppress(AppError):
                await self.get()
            return
        self.labels.learn(_etag(body), body)

    async def keep_labels_fresh(self, seconds: float) -> None:
        """Read the shared copy every `seconds`, so the labels know the models OpenRouter adds
        while no `GET /models` comes to this process. Runs until cancelled."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.get()
            except AppError as exc:
                logger.warning(
                    "could not read the model catalogue for the metrics' labels",
                    extra={"fields": {"error": exc.message}},
                )

    def _keep(self, models: ModelList) -> ModelList:
        """This process's copy, whose models are the labels' too."""
        self._local = models
        self.labels.learn(models.etag, models.body)
        return models

    async def _fetch(self) -> bytes:
        """OpenRouter's list, checked against the models the settings name."""
        body = await self._upstream.fetch_models()
        listed = {str(model.get("id")) for model in _models_decoder.decode(body).data}
        for model, setting in self._named.items():
            if model not in listed:
                logger.error(
                    "a model the settings name is not in OpenRouter's catalogue: every turn "
                    "sent to it fails",
                    extra={"fields": {"model": model, "setting": setting}},
                )
        return body

    async def get_openai(self) -> tuple[ModelList, bytes]:
        """The list and its body in OpenAI's shape (`GET /v1/models`)."""
        models = await self.get()
        converted = self._openai
        if converted is None or converted[0] != models.etag:
            converted = self._openai = (models.etag, openai_model_list(models.body))
        return models, converted[1]

    async def price_book(self) -> PriceBook:
        """The prices of the current copy: read again at most once per MODELS_CACHE_SECONDS,
        so that a turn held at its model's prices costs no round trip."""
        book = self._prices
        if book is not None and now_ms() - book[2] < max(self._fresh_ms, 1000):
            return book[1]
        models = await self.get()
        if book is None or book[0] != models.etag:
            book = (models.etag, PriceBook(models.body), now_ms())
        self._prices = (book[0], book[1], now_ms())
        return book[1]

    async def get(self) -> ModelList:
        try:
            return await self._shared()
        except RedisError:
            return await self._without_redis()

    async def _without_redis(self) -> ModelList:
        """Redis is away: this process's copy (stale), else one fetched for this process."""
        if self._local is not None:
            return msgspec.structs.replace(self._local, source="stale")
        body = await self._fetch()
        return self._keep(
            ModelList(body=body, etag=_etag(body), fetched_at_ms=now_ms(), source="miss")
        )

    async def _shared(self) -> ModelList:
        etag, fetched_at = await awaited(self._redis.hmget(keys.MODELS, ["etag", "fetched_at"]))
        cached = await self._cached(etag, fetched_at)
        if cached is not None and cached.source == "hit":
            return cached
        # One replica refreshes; the others serve the copy they have meanwhile.
        got_lock = await self._redis.set(
            keys.MODELS_REFRESH_LOCK, b"1", nx=True, px=REFRESH_LOCK_MS
        )
        if not got_lock and cached is not None:
            return cached
        try:
            body = await self._fetch()
        except AppError as exc:
            if cached is None:
                raise
            logger.warning(
                "model list refresh failed; serving the stale copy",
                extra={"fields": {"error": exc.message}},
            )
            return cached
        finally:
            if got_lock:
                await self._release_lock()
        fresh = ModelList(
            body=body,
            etag=_etag(body),
            fetched_at_ms=now_ms(),
            source="miss",
        )
        try:
            await awaited(
                self._redis.hset(
                    keys.MODELS,
                    mapping={"body": body, "etag": fresh.etag, "fetched_at": fresh.fetched_at_ms},
                )
            )
        except RedisError:
            # The list is in hand: serve it; the next request stores it again.
            logger.warning("could not store the model list in redis")
        return self._keep(fresh)

    async def _release_lock(self) -> None:
        try:
            await self._redis.delete(keys.MODELS_REFRESH_LOCK)
        except RedisError:
            logger.warning("could not release the model list refresh lock; it expires by itself")

    async def _cached(self, etag: bytes | None, fetched_at: bytes | None) -> ModelList | None:
        if etag is None or fetched_at is None:
            return None
        fetched_at_ms = int(fetched_at)
        source: Literal["hit", "stale"] = (
            "stale" if now_ms() - fetched_at_ms >= self._fresh_ms else "hit"
        )
        local = self._local
        if local is None or local.etag != etag.decode():
            body: bytes | None = await awaited(self._redis.hget(keys.MODELS, "body"))
            if body is None:
                return None
            local = self._keep(
                ModelList(body=body, etag=etag.decode(), fetched_at_ms=fetched_at_ms, source=source)
            )
        return msgspec.structs.replace(local, fetched_at_ms=fetched_at_ms, source=source)
