"""The one place where every exception becomes a response, in our shape or OpenAI's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import RedisError

from app.errors import MISSING_FIELD, AppError, InvalidRequest, invalid_field, openai_detail
from app.http.context import request_log
from app.schemas import ErrorBody, OpenAIErrorBody
from app.store.failures import storage_error

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ExceptionHandlersMap

logger = logging.getLogger("app.errors")

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


def _from_validation(exc: ValidationException) -> InvalidRequest:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict) and item.get("key"):
            # Litestar names the whole body `data`: the real field is in the message.
            key, message = str(item["key"]), str(item.get("message", "invalid value"))
            if key == "data" and not MISSING_FIELD.search(message):
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
    """Any exception but Litestar's own as the error its client is told."""
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
