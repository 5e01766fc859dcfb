"""POST /chat: one turn of a conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Reference, Schema
from litestar.params import JSONBody

from app.errors import InvalidRequest, from_msgspec
from app.http.context import request_log
from app.http.event_stream import EventStream
from app.http.routes import responses
from app.http.services import Services
from app.schemas import ChatRequest, ChatResponse
from app.turns.callers import Caller
from app.turns.streaming import CHAT_EVENTS, StreamRelay

T = TypeVar("T")


def parse_body(body: bytes, kind: type[T]) -> tuple[T, dict[str, Any]]:
    """The request, typed strictly, and the raw fields (the extras go upstream as sent)."""
    raw = msgspec.json.decode(body)
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return msgspec.convert(raw, kind), raw
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None


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
                    Schema(
                        all_of=[
                            Reference("#/components/schemas/ChatResponse"),
                            _event_of("done", []),
                        ]
                    ),
                    _event_of(
                        "error", ["error"], error=Reference("#/components/schemas/ErrorDetail")
                    ),
                ]
            ),
        )
    },
)


@dataclass
class ChatOperation(responses.TurnOperation):
    """The 200 answer is JSON, or an event stream when `stream` is true."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.responses.get("200") if self.responses else None
        if not isinstance(ok, OpenAPIResponse) or not ok.content:
            return
        json_body = ok.content.get("application/json")
        schema = json_body.schema if json_body else None
        # The union with EventStream renders as oneOf [ChatResponse, {}]: keep ChatResponse.
        if isinstance(schema, Schema) and schema.one_of:
            ok.content["application/json"] = OpenAPIMediaType(schema=schema.one_of[0])
        ok.content["text/event-stream"] = OpenAPIMediaType(schema=_EVENT)
        ok.description = "The answer, saved with its turn."


@post(
    "/chat",
    status_code=200,
    operation_class=ChatOperation,
    summary="Send a message and get the answer",
    tags=["chat"],
    security=responses.SECURITY,
    responses={
        400: responses.INVALID,
        401: responses.UNAUTHORIZED,
        402: responses.error("OpenRouter: the key's credits do not cover the request."),
        404: responses.error("No such session for this key, or OpenRouter knows no such model."),
        413: responses.error("The body is larger than `MAX_BODY_BYTES`."),
        429: responses.RATE_LIMITED,
        502: responses.error("OpenRouter failed, or answered with something that is not JSON."),
        503: responses.STORAGE,
        504: responses.error("OpenRouter did not answer within `UPSTREAM_TIMEOUT_SECONDS`."),
    },
)
async def chat(
    request: Request[Any, Any, Any],
    data: JSONBody[ChatRequest],
    caller: NamedDependency[Caller],
    services: NamedDependency[Services],
) -> ChatResponse | EventStream:
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
    log = request_log(request.scope)
    log.session_id = data.session_id
    # Litestar's conversion of `data` is lenient ("10" would pass as 10): read it again, strictly.
    data, extras = parse_body(await request.body(), ChatRequest)
    chat = services.chat
    if data.stream:
        turn, upstream = await chat.open_stream(caller, data, extras)
        return EventStream(
            StreamRelay(
                chat=chat,
                caller=caller,
                turn=turn,
                upstream=upstream,
                events=CHAT_EVENTS,
                keepalive_seconds=services.settings.stream_keepalive_seconds,
                log=log,
            )
        )
    answer = await chat.complete(caller, data, extras)
    log.session_id, log.model, log.tokens = answer.session_id, answer.model_used, answer.tokens_used
    return answer
