"""POST /chat: one turn of a conversation, as JSON or as server-sent events."""

from __future__ import annotations

import inspect

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from app.http.routes import responses
from app.http.turn_route import JSONAnswer, StreamAnswer, TurnRequest, parse_body, turn_route
from app.schemas import ChatRequest
from app.turns.streaming import CHAT_EVENTS

_encoder = msgspec.json.Encoder()


async def chat(request: TurnRequest) -> JSONAnswer | StreamAnswer:
    """Send `message` to the model with the session's whole history, and save the exchange.

    Without `session_id` a new session is started. With one, the turn continues it; an id
    that does not exist yet starts a session under that id. Fields OpenRouter understands
    (`models`, `provider`, `top_p`, `stop`, `seed`, ...) are passed through untouched.
    Nothing is saved when the call fails.

    With `"stream": true` the answer comes as server-sent events (`text/event-stream`): one
    `{"type": "delta", "content": ...}` per piece of text, then `{"type": "done", ...}` with
    every field of the JSON answer, or `{"type": "error", "error": {...}}` if the stream
    breaks after it began. Errors before it begins are plain JSON errors, as above.
    """
    data, extras = parse_body(request.body, ChatRequest)
    log, service = request.log, request.services.chat
    log.session_id = data.session_id
    if data.stream:
        turn, upstream = await service.open_stream(request.caller, data, extras)
        return StreamAnswer(request.relay(turn, upstream, CHAT_EVENTS))
    answer = await service.complete(request.caller, data, extras)
    log.session_id, log.model, log.tokens = answer.session_id, answer.model_used, answer.tokens_used
    return JSONAnswer(_encoder.encode(answer))


def _event_of(kind: str, required: list[str], **properties: Schema | Reference) -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["type", *required],
        properties={"type": Schema(const=kind), **properties},
    )


# One server-sent event of a streamed answer: its `data` line is one of three JSON objects.
_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    required=["data"],
    description=(
        'With `stream: true`: `data: <JSON>` events: `{"type": "delta", "content"}` for each '
        'piece of text, then `{"type": "done", ...}` with every field of the JSON answer, or '
        '`{"type": "error", "error"}`; `: keep-alive` comment lines at least every 15 seconds.'
    ),
    properties={
        "data": Schema(
            type=OpenAPIType.STRING,
            content_media_type="application/json",
            content_schema=Schema(
                one_of=[
                    _event_of("delta", ["content"], content=Schema(type=OpenAPIType.STRING)),
                    Schema(all_of=[responses.component("ChatResponse"), _event_of("done", [])]),
                    _event_of("error", ["error"], error=responses.component("ErrorDetail")),
                ]
            ),
        )
    },
)

OPERATION = Operation(
    tags=["chat"],
    summary="Send a message and get the answer",
    description=inspect.cleandoc(chat.__doc__ or ""),
    operation_id="ChatChat",
    security=responses.SECURITY,
    request_body=responses.json_request("ChatRequest"),
    responses={
        "200": OpenAPIResponse(
            description="The answer, saved with its turn.",
            headers=responses.QUOTA_HEADERS,
            content={
                "application/json": OpenAPIMediaType(schema=responses.component("ChatResponse")),
                "text/event-stream": OpenAPIMediaType(schema=_EVENT),
            },
        ),
        **responses.turn_responses(
            {
                400: responses.INVALID_TEXT,
                401: responses.TURN_UNAUTHORIZED_TEXT,
                402: "OpenRouter: the key's credits do not cover the request.",
                404: "No such session for this key, or OpenRouter knows no such model.",
                413: "The body is larger than `MAX_BODY_BYTES`.",
                429: responses.RATE_LIMITED_TEXT,
                502: "OpenRouter failed, or answered with something that is not JSON.",
                503: responses.STORAGE_TEXT,
                504: "OpenRouter did not answer within `UPSTREAM_TIMEOUT_SECONDS`.",
            }
        ),
    },
)

chat_route = turn_route("/chat", chat, operation=OPERATION)
