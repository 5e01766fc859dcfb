"""The API's documentation: Swagger UI at /docs, ReDoc at /redoc, the document at /openapi.json.

Served by our own handlers rather than Litestar's schema router, whose catch-all route would
answer every unknown path with an HTML page instead of our JSON error body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin

from app import schemas

_swagger = SwaggerRenderPlugin()
_redoc = RedocRenderPlugin()


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength")


def _fill_bounds(source: dict[str, Any], target: dict[str, Any]) -> None:
    """Copy the bounds msgspec states into Litestar's schema where Litestar left them out.

    Litestar drops falsy bounds (`minimum: 0` of a temperature); msgspec's own JSON schema of
    the same struct has them. Optional fields are `anyOf` in one and `oneOf` in the other.
    """
    for bound in _BOUNDS:
        if bound in source and bound not in target:
            target[bound] = source[bound]
    for name, prop in source.get("properties", {}).items():
        if name in target.get("properties", {}):
            _fill_bounds(prop, target["properties"][name])
    alternatives = source.get("anyOf", [])
    for option in target.get("oneOf", target.get("anyOf", [])):
        for candidate in alternatives:
            if candidate.get("type") is not None and candidate.get("type") == option.get("type"):
                _fill_bounds(candidate, option)
    # Litestar also repeats an optional field's bounds beside its `oneOf`: complete those too.
    for candidate in alternatives:
        if any(bound in target for bound in _BOUNDS if bound in candidate):
            for bound in _BOUNDS:
                if bound in candidate and bound not in target:
                    target[bound] = candidate[bound]


def _document(app: Litestar) -> dict[str, Any]:
    document = app.openapi_schema.to_schema()
    structs = [
        value
        for value in vars(schemas).values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct)
    ]
    _, components = msgspec.json.schema_components(structs)
    ours = document.get("components", {}).get("schemas", {})
    for name, component in components.items():
        if name in ours:
            _fill_bounds(component, ours[name])
    return document


def _schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = request.app.state
    if "openapi_document" not in state:
        state.openapi_document = _document(request.app)
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
