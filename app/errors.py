"""The error hierarchy, and the one place where every exception becomes a response.

One hierarchy, two shapes: our error body everywhere, OpenAI's on the `/v1` routes.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import OutOfMemoryError, RedisError

from app import telemetry
from app.context import request_log
from app.schemas import ErrorBody, ErrorDetail, OpenAIErrorBody, OpenAIErrorDetail

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ExceptionHandlersMap

logger = logging.getLogger("app.errors")

_MISSING_FIELD = re.compile(r"required field `([^`]+)`")


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


# Litestar's own HTTP exceptions, by status, as types of our error body.
_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


ErrorResponse = Response[ErrorBody | OpenAIErrorBody]

# Routes under this prefix speak OpenAI's API, errors included.
OPENAI_PREFIX = "/v1/"

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


def error_body(error: AppError, path: str, request_id: str) -> ErrorBody | OpenAIErrorBody:
    """The body of an error response: OpenAI's shape under `/v1/`, ours everywhere else."""
    if path.startswith(OPENAI_PREFIX):
        return OpenAIErrorBody(error=openai_detail(error))
    return ErrorBody(error=error.detail(request_id))


def _render(request: Request[Any, Any, Any], error: AppError) -> ErrorResponse:
    body = error_body(error, request.scope["path"], request_log(request.scope).request_id)
    return Response(
        body, status_code=error.status, headers=error.headers, media_type=MediaType.JSON
    )


def invalid_field(message: str, field: str | None) -> InvalidRequest:
    """msgspec names a missing field only in its message (`... required field `x``)."""
    missing = _MISSING_FIELD.search(message)
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


def _from_validation(exc: ValidationException) -> InvalidRequest:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict) and item.get("key"):
            # Litestar names the whole body `data`: the real field is in the message.
            key, message = str(item["key"]), str(item.get("message", "invalid value"))
            if key == "data" and not _MISSING_FIELD.search(message):
                return InvalidRequest(f"the request body must be a JSON object: {message}")
            return invalid_field(message, None if key == "data" else key)
    detail = str(exc.detail)
    if detail.startswith("Validation failed"):
        detail = "the request body is not valid JSON"
    return InvalidRequest(detail)


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> AppError:
    if isinstance(exc, ValidationException):
        return _from_validation(exc)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    error = AppError(message, headers=dict(exc.headers or {}))
    error.status = exc.status_code
    error.type = _HTTP_TYPES.get(exc.status_code, "http_error")
    return error


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> ErrorResponse:
    if exc.status_code >= 500:
        logger.error("server error: %s", exc.detail)
    return _render(request, _from_http(request, exc))


def storage_error(exc: RedisError) -> StorageUnavailable:
    """What a client is told, and the log and the metrics say, when a Redis call fails."""
    telemetry.redis_failed()
    if isinstance(exc, OutOfMemoryError):
        # maxmemory reached with noeviction: Redis refuses writes, whole scripts included.
        logger.error("redis is out of memory: writes are refused")
        return StorageUnavailable("session storage is full")
    logger.warning("redis unavailable: %s", type(exc).__name__)
    return StorageUnavailable()


def unexpected_error(exc: Exception) -> AppError:
    """A failure that no handler expected: logged with its traceback, told as a bare 500."""
    logger.exception("unhandled error", exc_info=exc)
    return AppError("internal error")


def recursion_error(exc: RecursionError) -> AppError:
    """msgspec gives up on JSON nested too deeply with a RecursionError, not a DecodeError."""
    if "deserializing" not in str(exc):
        return unexpected_error(exc)
    return InvalidRequest("the request body is nested too deeply")


def as_app_error(exc: Exception) -> AppError:
    """Any exception but Litestar's own as the error its client is told: for Litestar's
    handler below and for the `/chat` served beside it (`app.fast_chat`)."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, RedisError):
        return storage_error(exc)
    if isinstance(exc, RecursionError):
        return recursion_error(exc)
    return unexpected_error(exc)


def handle_error(request: Request[Any, Any, Any], exc: Exception) -> ErrorResponse:
    """Our errors, Redis failures, JSON nested too deeply and anything unexpected."""
    return _render(request, as_app_error(exc))


# Litestar picks the handler of the nearest class in an exception's MRO.
exception_handlers: ExceptionHandlersMap = {
    HTTPException: handle_http_exception,
    Exception: handle_error,
}
