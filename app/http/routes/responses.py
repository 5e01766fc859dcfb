"""Documented responses, shared by the routes' OpenAPI descriptions.

Litestar's handlers take `ResponseSpec`s; the turn routes (`app.http.turn_route`) declare
their whole OpenAPI operation, with `OpenAPIResponse`s. Both say the same words here.
"""

from __future__ import annotations

from typing import TypeAlias

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    RequestBody,
    Schema,
)

from app.schemas import ErrorBody


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


INVALID_TEXT = "The request is invalid; `error.field` names the field at fault."
UNAUTHORIZED_TEXT = (
    "No key, a malformed `Authorization` header, or (server-key mode) an unknown app token."
)
TURN_UNAUTHORIZED_TEXT = (
    "No key, a malformed `Authorization` header, (server-key mode) an unknown app token, or "
    "OpenRouter refused the key (`upstream_unauthorized`), now or within the last "
    "`REFUSED_KEY_SECONDS`."
)
AUTH_FAILURES_TEXT = (
    "Too many failed authentications from your address (`rate_limited`: "
    "`AUTH_FAILURES_PER_MINUTE`); `Retry-After` says when to retry."
)
RATE_LIMITED_TEXT = (
    "Your own limit is used up (`rate_limited`: `RATE_LIMIT_PER_MINUTE` or "
    "`TOKEN_LIMIT_PER_DAY`), your address failed to authenticate too often "
    "(`AUTH_FAILURES_PER_MINUTE`), or OpenRouter rate-limited the call (`rate_limited` with "
    "`upstream_status`); `Retry-After` says when to retry."
)
STORAGE_TEXT = "Redis is unreachable (`storage_unavailable`), or OpenRouter is (`upstream_*`)."

INVALID = error(INVALID_TEXT)
UNAUTHORIZED = error(UNAUTHORIZED_TEXT)
NOT_FOUND = error("No such session for this key.")
STORAGE = error(STORAGE_TEXT)
AUTH_FAILURES = error(AUTH_FAILURES_TEXT)
SECURITY: list[dict[str, list[str]]] = [{"OpenRouterKey": []}]
# What every keyed route may answer besides its own outcomes.
COMMON = {400: INVALID, 401: UNAUTHORIZED, 429: AUTH_FAILURES, 503: STORAGE}


Headers: TypeAlias = dict[str, OpenAPIHeader | Reference]


def _header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), description=description)


# Sent on every answer to a turn (200, 429, and errors after the admission) while the limit
# is set; the `-Tokens` ones while TOKEN_LIMIT_PER_DAY is.
QUOTA_HEADERS: Headers = {
    "X-RateLimit-Limit": _header("Turns allowed per minute (`RATE_LIMIT_PER_MINUTE`)."),
    "X-RateLimit-Remaining": _header("Turns you may still send at once."),
    "X-RateLimit-Reset": _header("Seconds until the full allowance is back."),
    "X-RateLimit-Limit-Tokens": _header("Tokens allowed per UTC day (`TOKEN_LIMIT_PER_DAY`)."),
    "X-RateLimit-Remaining-Tokens": _header("Tokens left today."),
    "X-RateLimit-Reset-Tokens": _header("Seconds until the UTC day ends."),
}
RETRY_AFTER: Headers = {"Retry-After": _header("Seconds to wait before the next turn can succeed.")}


def component(name: str) -> Reference:
    """A reference to the schema of one of `app.schemas`' structs (or a route's own)."""
    return Reference(f"#/components/schemas/{name}")


def json_request(body: str) -> RequestBody:
    """A turn route's required JSON body: `body` names its schema's component."""
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=component(body))}, required=True
    )


def json_response(description: str, body: str, headers: Headers | None = None) -> OpenAPIResponse:
    """A documented JSON answer of a turn route: `body` names its schema's component."""
    return OpenAPIResponse(
        description=description,
        content={"application/json": OpenAPIMediaType(schema=component(body))},
        headers=headers,
    )


def turn_responses(
    errors: dict[int, str], *, error_body: str = "ErrorBody"
) -> dict[str, OpenAPIResponse | Reference]:
    """A turn route's error answers; the 429 names its rate-limit headers."""
    return {
        str(status): json_response(
            text, error_body, {**RETRY_AFTER, **QUOTA_HEADERS} if status == 429 else None
        )
        for status, text in sorted(errors.items())
    }
