"""The API's documentation: Swagger UI at /docs, ReDoc at /redoc, the document at /openapi.json.

Served by our own handlers rather than Litestar's schema router, whose catch-all route would
answer every unknown path with an HTML page instead of our JSON error body. The two viewers'
pages, and what they may load, are in app/http/docs_pages.py; DOCS_ENABLED=false leaves them
out, and the document stays.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import ASGIRoute

from app import schemas
from app.http.docs_pages import DOCUMENT_PATH, REDOC, SWAGGER_UI, DocsPage
from app.http.turn_route import OPENAPI_OPT, TurnRouteDoc

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


def _hoisted(component: dict[str, Any]) -> dict[str, Any]:
    """msgspec's schema of a struct, its optional fields described as Litestar describes them.

    msgspec keeps an optional field's description, examples and bounds inside the non-null
    alternative of its `anyOf`; Litestar states them beside it too, where documentation
    viewers show them.
    """
    for prop in component.get("properties", {}).values():
        options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
        if len(options) == 1:
            for name in ("description", "examples", "pattern", *_BOUNDS):
                if name in options[0] and name not in prop:
                    prop[name] = options[0][name]
    return component


def _turn_route_docs(app: Litestar) -> dict[str, TurnRouteDoc]:
    """The turn routes' own documentation, by path (Litestar documents its HTTP routes)."""
    docs: dict[str, TurnRouteDoc] = {}
    for route in app.routes:
        if isinstance(route, ASGIRoute):
            doc = route.route_handler.opt.get(OPENAPI_OPT)
            if isinstance(doc, TurnRouteDoc):
                docs[route.path] = doc
    return docs


def _references(value: Any) -> set[str]:
    """The component names that `$ref`s in `value` point at."""
    if isinstance(value, dict):
        found = {value["$ref"].rpartition("/")[2]} if isinstance(value.get("$ref"), str) else set()
        return found.union(*(_references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value))
    return set()


def _document(app: Litestar) -> dict[str, Any]:
    document = app.openapi_schema.to_schema()
    turn_routes = _turn_route_docs(app)
    paths: dict[str, Any] = document.setdefault("paths", {})
    for path, doc in turn_routes.items():
        paths.setdefault(path, {})[doc.method] = doc.operation.to_schema()
    structs = [
        value
        for value in vars(schemas).values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct)
    ]
    structs += [struct for doc in turn_routes.values() for struct in doc.structs]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    ours: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for name, component in components.items():
        if name in ours:
            _fill_bounds(component, ours[name])
    # What the turn routes name and Litestar did not see, as msgspec describes it.
    wanted = _references(paths) - set(ours)
    while wanted:
        name = wanted.pop()
        ours[name] = _hoisted(components[name])
        wanted |= _references(components[name]) - set(ours)
    return document


def _schema(request: Request[Any, Any, Any]) -> dict[str, Any]:
    state = request.app.state
    if "openapi_document" not in state:
        state.openapi_document = _document(request.app)
    document: dict[str, Any] = state.openapi_document
    return document


@get(DOCUMENT_PATH, include_in_schema=False, sync_to_thread=False)
def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        JsonRenderPlugin.render_json(request, _schema(request)),
        media_type="application/vnd.oai.openapi+json",
    )


def _page(request: Request[Any, Any, Any], page: DocsPage) -> Response[bytes]:
    title: str = _schema(request)["info"]["title"]
    return Response(page.html(title), media_type=MediaType.HTML, headers=page.headers)


@get("/docs", include_in_schema=False, sync_to_thread=False)
def swagger_ui(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _page(request, SWAGGER_UI)


@get("/redoc", include_in_schema=False, sync_to_thread=False)
def redoc(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _page(request, REDOC)


viewer_handlers = [swagger_ui, redoc]
