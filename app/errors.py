"""The error hierarchy: every error the API answers, with its status, type and message.

One hierarchy, two wire shapes: our error body everywhere, OpenAI's on the `/v1` routes. Where
an exception becomes a response is `app.http.errors`.
"""

from __future__ import annotations

import re

import msgspec

from app.schemas import ErrorDetail, OpenAIErrorDetail

MISSING_FIELD = re.compile(r"required field `([^`]+)`")


class AppError(Exception):
    """An error with a status, a machine-readable type and a message safe to show."""

    status: int = 500
    type: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def detail(self, request_id: str) -> ErrorDetail:
        return ErrorDetail(
            status=self.status,
            type=self.type,
            message=self.message,
            request_id=request_id,
            field=self.field,
        )


class InvalidRequest(AppError):
    status = 400
    type = "invalid_request"


class Unauthorized(AppError):
    status = 401
    type = "unauthorized"


class ModelNotAllowed(AppError):
    """The turn could reach a model the operator does not pay for (ALLOWED_MODELS)."""

    status = 403
    type = "model_not_allowed"


class MethodNotAllowed(AppError):
    status = 405
    type = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: str) -> None:
        super().__init__(f"{method} is not allowed on {path}", headers={"Allow": allowed})


class RequestTimeout(AppError):
    """The body did not arrive in time; the connection is closed with the answer."""

    status = 408
    type = "request_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g} s",
            headers={"Connection": "close"},
        )


class PayloadTooLarge(AppError):
    status = 413
    type = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than MAX_BODY_BYTES ({limit} bytes)")


class ClientDisconnected(AppError):
    """The client hung up before its body arrived: nobody reads the answer; the log says 499."""

    status = 499
    type = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client disconnected before its request body arrived")


class SessionNotFound(AppError):
    status = 404
    type = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} does not exist")


class RateLimited(AppError):
    """The caller's own limit (RATE_LIMIT_PER_MINUTE or TOKEN_LIMIT_PER_DAY) is used up."""

    status = 429
    type = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(AppError):
    status = 503
    type = "storage_unavailable"

    def __init__(self, reason: str = "session storage is unavailable") -> None:
        super().__init__(f"{reason}; retry shortly", headers={"Retry-After": "1"})


class UpstreamError(AppError):
    """OpenRouter failed or refused; `status` is what we answer, `upstream_status` what it said."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        upstream_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.status = status
        self.type = error_type
        self.upstream_status = upstream_status

    def detail(self, request_id: str) -> ErrorDetail:
        return msgspec.structs.replace(
            super().detail(request_id), upstream_status=self.upstream_status
        )


# OpenAI's error types by status; SDKs pick their exception class by status alone.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_detail(error: AppError) -> OpenAIErrorDetail:
    """The same error in OpenAI's shape: `code` keeps our machine-readable type."""
    if error.status >= 500:
        kind = "server_error"
    else:
        kind = _OPENAI_TYPES.get(error.status, "invalid_request_error")
    return OpenAIErrorDetail(message=error.message, type=kind, code=error.type, param=error.field)


def invalid_field(message: str, field: str | None) -> InvalidRequest:
    """msgspec names a missing field only in its message (`... required field `x``)."""
    missing = MISSING_FIELD.search(message)
    if missing:
        field = missing.group(1)
    if field is None:
        return InvalidRequest(message)
    return InvalidRequest(f"{field}: {message}", field=field)


def from_msgspec(exc: msgspec.ValidationError) -> InvalidRequest:
    """`Expected `int`, got `str` - at `$.max_tokens`` -> 400 naming `max_tokens`."""
    message, _, path = str(exc).partition(" - at `$")
    field = path.rstrip("`").lstrip(".") or None
    return invalid_field(message, field)
