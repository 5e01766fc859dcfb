"""`/v1`: OpenAI's API over the same turns, so OpenAI SDKs work with only `base_url` changed."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIType,
    Operation,
    Parameter,
    Schema,
)

from app.http.routes import responses
from app.http.routes.models import cached_response
from app.http.services import Services
from app.http.turn_route import JSONAnswer, StreamAnswer, TurnRequest, parse_body, turn_route
from app.schemas import CompletionRequest, OpenAIErrorBody
from app.turns.openai_request import SESSION_HEADER, session_from_header
from app.turns.streaming import OPENAI_EVENTS


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


async def chat_completions(request: TurnRequest) -> JSONAnswer | StreamAnswer:
    """OpenAI's `POST /chat/completions`, passed to OpenRouter.

    Without `X-Session-Id` the request goes upstream as sent and nothing is stored. With it,
    send only the new messages: the session's system prompt and history go first, and the
    new user, tool and assistant messages are stored with the answer (`system` messages set
    the session's system prompt). `X-Session-Id: new` starts a session; the response's
    `X-Session-Id` names it. The session is the one `/chat` and `/sessions/{id}` see.
    """
    data, raw = parse_body(request.body, CompletionRequest)
    session = session_from_header(request.header(_SESSION_HEADER_NAME))
    log, service = request.log, request.services.chat
    turn = await service.prepare_completion(request.caller, data, raw, session)
    headers = {SESSION_HEADER: turn.session_id} if turn.session_id else {}
    log.session_id = turn.session_id
    if data.stream:
        upstream = await service.stream(request.caller, turn)
        return StreamAnswer(request.relay(turn, upstream, OPENAI_EVENTS), headers)
    completion, _ = await service.run(request.caller, turn)
    log.model, log.tokens = completion.model, completion.usage.total_tokens
    return JSONAnswer(completion.body, headers)


_SESSION_HEADER_NAME = SESSION_HEADER.lower().encode()

COMPLETIONS_OPERATION = Operation(
    tags=["openai"],
    summary="OpenAI chat completion, with optional server-side memory",
    description=inspect.cleandoc(chat_completions.__doc__ or ""),
    operation_id="V1ChatCompletionsChatCompletions",
    security=responses.SECURITY,
    parameters=[
        Parameter(
            name=SESSION_HEADER,
            param_in=ParamType.HEADER,
            required=False,
            schema=Schema(type=OpenAPIType.STRING),
            description="Server-side memory: `new` starts a session, an id continues one. "
            "Without it, nothing is stored.",
        )
    ],
    request_body=responses.json_request("CompletionRequest"),
    responses={
        "200": responses.json_response(
            "The completion; with `stream: true`, OpenAI's SSE chunks and `data: [DONE]`.",
            "ChatCompletionDoc",
            responses.QUOTA_HEADERS,
        ),
        **responses.turn_responses(
            {
                400: "Invalid body, parameter or `X-Session-Id`; `error.param` names it.",
                401: "No key, or OpenRouter refused it (now, or within the last "
                "`REFUSED_KEY_SECONDS`).",
                404: "No such session for this key, or no such model.",
                413: "The body is larger than `MAX_BODY_BYTES`.",
                429: "OpenRouter rate-limited the call, your own limit is used up, or your "
                "address failed to authenticate too often; `Retry-After` says when to retry.",
                502: "OpenRouter failed.",
                503: "Redis is unreachable, or OpenRouter is.",
                504: "OpenRouter did not answer within `UPSTREAM_TIMEOUT_SECONDS`.",
            },
            error_body="OpenAIErrorBody",
        ),
    },
)

completions_route = turn_route(
    "/v1/chat/completions",
    chat_completions,
    operation=COMPLETIONS_OPERATION,
    schemas=(ChatCompletionDoc,),
)


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


v1_handlers = [completions_route, list_models_v1]
