"""`/v1`: OpenAI's API over the same turns, so OpenAI SDKs work with only `base_url` changed."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, JSONBody

from app.http.context import request_log
from app.http.event_stream import EventStream
from app.http.routes.chat import parse_body
from app.http.routes.models import cached_response
from app.http.services import Services
from app.schemas import CompletionRequest, OpenAIErrorBody
from app.turns.callers import Caller
from app.turns.openai_request import SESSION_HEADER, session_from_header
from app.turns.streaming import OPENAI_EVENTS, StreamRelay


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=OpenAIErrorBody, description=description, generate_examples=False
    )


class ChatCompletionDoc(msgspec.Struct):
    """OpenAI's chat completion object, as OpenRouter sent it (`id`, `object`, `created`,
    `model`, `choices[].message` with `content` and `tool_calls`, `usage` with `cost`, ...)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any]


class OpenAIModelListDoc(msgspec.Struct):
    """OpenAI's list shape: each model as OpenRouter describes it, with `object: "model"`
    and `owned_by`."""

    object: str
    data: list[dict[str, Any]]


@post(
    "/v1/chat/completions",
    status_code=200,
    summary="OpenAI chat completion, with optional server-side memory",
    tags=["openai"],
    security=[{"OpenRouterKey": []}],
    responses={
        200: ResponseSpec(
            data_container=ChatCompletionDoc,
            description="The completion; with `stream: true`, OpenAI's SSE chunks and "
            "`data: [DONE]`.",
            generate_examples=False,
        ),
        400: _error("Invalid body, parameter or `X-Session-Id`; `error.param` names it."),
        401: _error("No key, or OpenRouter refused it."),
        404: _error("No such session for this key, or no such model."),
        429: _error("OpenRouter rate-limited the call; `Retry-After` says when to retry."),
        502: _error("OpenRouter failed."),
        503: _error("Redis is unreachable, or OpenRouter is."),
    },
)
async def chat_completions(
    request: Request[Any, Any, Any],
    data: JSONBody[CompletionRequest],
    caller: NamedDependency[Caller],
    services: NamedDependency[Services],
    session: Annotated[
        str | None,
        HeaderParameter(
            name=SESSION_HEADER,
            required=False,
            description="Server-side memory: `new` starts a session, an id continues one. "
            "Without it, nothing is stored.",
        ),
    ] = None,
) -> Response[bytes]:
    """OpenAI's `POST /chat/completions`, passed to OpenRouter.

    Without `X-Session-Id` the request goes upstream as sent and nothing is stored. With it,
    send only the new messages: the session's system prompt and history go first, and the
    new user, tool and assistant messages are stored with the answer (`system` messages set
    the session's system prompt). `X-Session-Id: new` starts a session; the response's
    `X-Session-Id` names it. The session is the one `/chat` and `/sessions/{id}` see.
    """
    log = request_log(request.scope)
    # Litestar's conversion of `data` is lenient ("10" would pass as 10): read it again, strictly.
    data, raw = parse_body(await request.body(), CompletionRequest)
    chat = services.chat
    turn = await chat.prepare_completion(caller, data, raw, session_from_header(session))
    headers = {SESSION_HEADER: turn.session_id} if turn.session_id else {}
    log.session_id = turn.session_id
    if data.stream:
        upstream = await chat.stream(caller, turn)
        relay = StreamRelay(
            chat=chat,
            caller=caller,
            turn=turn,
            upstream=upstream,
            events=OPENAI_EVENTS,
            keepalive_seconds=services.settings.stream_keepalive_seconds,
            log=log,
        )
        return EventStream(relay, headers)
    completion, _ = await chat.run(caller, turn)
    log.model, log.tokens = completion.model, completion.usage.total_tokens
    return Response(completion.body, media_type=MediaType.JSON, headers=headers)


@get(
    "/v1/models",
    summary="List the models, in OpenAI's shape",
    tags=["openai"],
    responses={
        200: ResponseSpec(
            data_container=OpenAIModelListDoc, description="The models.", generate_examples=False
        ),
        304: ResponseSpec(data_container=None, description="The list has not changed (ETag)."),
        502: _error("OpenRouter failed and no copy is cached."),
        503: _error("Redis is unreachable."),
    },
)
async def list_models_v1(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    """OpenAI's `GET /models`: `{"object": "list", "data": [...]}` from the same shared copy
    as `GET /models`. No key needed."""
    models, body = await services.catalog.get_openai()
    return cached_response(request, models, body, f'"v1-{models.etag}"', services)


v1_handlers = [chat_completions, list_models_v1]
