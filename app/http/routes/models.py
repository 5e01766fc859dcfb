"""GET /models: OpenRouter's model list, from the shared cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from app.http.routes import responses
from app.http.services import Services

if TYPE_CHECKING:
    from app.turns.catalog import ModelList


class ModelListDoc(msgspec.Struct):
    """OpenRouter's `GET /models` body: `data` holds one object per model (id, name, pricing,
    context_length, architecture, ...), exactly as OpenRouter documents it."""

    data: list[dict[str, Any]]


@get(
    "/models",
    summary="List the models OpenRouter offers",
    tags=["models"],
    responses={
        # The body is passed on as bytes; this documents what those bytes are.
        200: ResponseSpec(
            data_container=ModelListDoc,
            description="OpenRouter's model list, as it sent it.",
            generate_examples=False,
        ),
        304: ResponseSpec(data_container=None, description="The list has not changed (ETag)."),
        502: responses.error("OpenRouter failed and no copy is cached."),
        503: responses.STORAGE,
        504: responses.error("OpenRouter did not answer and no copy is cached."),
    },
)
async def list_models(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
) -> Response[bytes]:
    """`{"data": [...]}` exactly as OpenRouter sends it. No key needed.

    Kept in Redis for `MODELS_CACHE_SECONDS`, shared by every replica; when OpenRouter is
    down the last copy is served (`X-Cache: stale`).
    """
    models = await services.catalog.get()
    return cached_response(request, models, models.body, f'"{models.etag}"', services)


def cached_response(
    request: Request[Any, Any, Any],
    models: ModelList,
    body: bytes,
    etag: str,
    services: Services,
) -> Response[bytes]:
    """A copy of the model list with its cache headers, or 304 when the client has it."""
    max_age = models.max_age(services.settings.models_cache_seconds)
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}",
        "X-Cache": models.source,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type=MediaType.JSON, headers=headers)
