"""Documented error responses, shared by the handlers' OpenAPI descriptions."""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from app.schemas import ErrorBody


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


INVALID = error("The request is invalid; `error.field` names the field at fault.")
UNAUTHORIZED = error("No OpenRouter key, or a malformed `Authorization` header.")
NOT_FOUND = error("No such session for this key.")
STORAGE = error("Redis is unreachable (`storage_unavailable`), or OpenRouter is (`upstream_*`).")
SECURITY: list[dict[str, list[str]]] = [{"OpenRouterKey": []}]
# What every keyed route may answer besides its own outcomes.
COMMON = {400: INVALID, 401: UNAUTHORIZED, 503: STORAGE}
