"""POST /chat: one turn of a conversation."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, post

from app.auth import Caller
from app.chat import ChatService
from app.context import request_log
from app.controllers import responses
from app.schemas import ChatRequest, ChatResponse


@post(
    "/chat",
    status_code=200,
    summary="Send a message and get the answer",
    tags=["chat"],
    security=responses.SECURITY,
    responses={
        400: responses.INVALID,
        401: responses.UNAUTHORIZED,
        402: responses.error("OpenRouter: the key's credits do not cover the request."),
        404: responses.error("No such session for this key, or OpenRouter knows no such model."),
        413: responses.error("The body is larger than `MAX_BODY_BYTES`."),
        429: responses.error("OpenRouter rate-limited the call; `Retry-After` says when to retry."),
        502: responses.error("OpenRouter failed, or answered with something that is not JSON."),
        503: responses.STORAGE,
        504: responses.error("OpenRouter did not answer within `UPSTREAM_TIMEOUT_SECONDS`."),
    },
)
async def chat(
    request: Request[Any, Any, Any], data: ChatRequest, caller: Caller, chat: ChatService
) -> ChatResponse:
    """Send `message` to the model with the session's whole history, and save the exchange.

    Without `session_id` a new session is started. With one, the turn continues it; an id
    that does not exist yet starts a session under that id. Fields OpenRouter understands
    (`models`, `provider`, `top_p`, `stop`, `seed`, ...) are passed through untouched.
    Nothing is saved when the call fails.
    """
    log = request_log(request.scope)
    log.session_id = data.session_id
    extras: dict[str, Any] = msgspec.json.decode(await request.body())
    answer = await chat.complete(caller, data, extras)
    log.session_id, log.model, log.tokens = answer.session_id, answer.model_used, answer.tokens_used
    return answer
