"""The API's documentation: Swagger UI at /docs, ReDoc at /redoc, the document at /openapi.json.

Served by our own handlers rather than Litestar's schema router, whose catch-all route would
answer every unknown path with an HTML page instead of our JSON error body.
"""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin

_swagger = SwaggerRenderPlugin()
_redoc = RedocRenderPlugin()


def _schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = request.app.state
    if "openapi_document" not in state:
        state.openapi_document = request.app.openapi_schema.to_schema()
    document: dict[str, Any] = state.openapi_document
    return document


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        JsonRenderPlugin.render_json(request, _schema(request)),
        media_type="application/vnd.oai.openapi+json",
    )


@get("/docs", include_in_schema=False, sync_to_thread=False)
def swagger_ui(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(_swagger.render(request, _schema(request)), media_type=MediaType.HTML)


@get("/redoc", include_in_schema=False, sync_to_thread=False)
def redoc(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(_redoc.render(request, _schema(request)), media_type=MediaType.HTML)


docs_handlers = [openapi_json, swagger_ui, redoc]
