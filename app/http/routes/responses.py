"""Documented error responses, shared by the handlers' OpenAPI descriptions."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, OpenAPIType, Operation, Schema

from app.schemas import ErrorBody


def error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


INVALID = error("The request is invalid; `error.field` names the field at fault.")
UNAUTHORIZED = error(
    "No key, a malformed `Authorization` header, or (server-key mode) an unknown app token."
)
RATE_LIMITED = error(
    "Your own limit is used up (`rate_limited`: `RATE_LIMIT_PER_MINUTE` or "
    "`TOKEN_LIMIT_PER_DAY`), or OpenRouter rate-limited the call (`rate_limited` with "
    "`upstream_status`); `Retry-After` says when to retry."
)
NOT_FOUND = error("No such session for this key.")
STORAGE = error("Redis is unreachable (`storage_unavailable`), or OpenRouter is (`upstream_*`).")
SECURITY: list[dict[str, list[str]]] = [{"OpenRouterKey": []}]
# What every keyed route may answer besides its own outcomes.
COMMON = {400: INVALID, 401: UNAUTHORIZED, 503: STORAGE}


def _header(description: str) -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), description=description)


# Sent on every answer to a turn (200, 429, and errors after the admission) while the limit
# is set; the `-Tokens` ones while TOKEN_LIMIT_PER_DAY is.
QUOTA_HEADERS = {
    "X-RateLimit-Limit": _header("Turns allowed per minute (`RATE_LIMIT_PER_MINUTE`)."),
    "X-RateLimit-Remaining": _header("Turns you may still send at once."),
    "X-RateLimit-Reset": _header("Seconds until the full allowance is back."),
    "X-RateLimit-Limit-Tokens": _header("Tokens allowed per UTC day (`TOKEN_LIMIT_PER_DAY`)."),
    "X-RateLimit-Remaining-Tokens": _header("Tokens left today."),
    "X-RateLimit-Reset-Tokens": _header("Seconds until the UTC day ends."),
}
RETRY_AFTER = {"Retry-After": _header("Seconds to wait before the next turn can succeed.")}


@dataclass
class TurnOperation(Operation):
    """A route that makes turns: its 200 and 429 answers document the rate-limit headers."""

    def __post_init__(self) -> None:
        for status, extra in (("200", {}), ("429", RETRY_AFTER)):
            response = self.responses.get(status) if self.responses else None
            if isinstance(response, OpenAPIResponse):
                response.headers = {**(response.headers or {}), **extra, **QUOTA_HEADERS}
