"""The public API: request and response structs, as they appear on the wire and in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# `(?!\n)` because Python's `$` also matches before a final newline; ECMA regexes read it as `$`.
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}(?!\n)$"

SessionId = Annotated[
    str,
    Meta(
        pattern=SESSION_ID_PATTERN,
        description="1 to 64 characters from `A-Z a-z 0-9 _ -`.",
        examples=["3q2-7wEVQb6sBsl2QFzJ9g"],
    ),
]
Temperature = Annotated[float, Meta(ge=0, le=2, description="Sampling temperature, 0 to 2.")]
ModelId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        description="An OpenRouter model id; defaults to `OPENROUTER_DEFAULT_MODEL`.",
        examples=["anthropic/claude-sonnet-4.5"],
    ),
]


class ChatRequest(msgspec.Struct, kw_only=True, frozen=True):
    """One turn of a conversation.

    Fields OpenRouter understands that are not listed here (`models`, `provider`, `top_p`,
    `stop`, `seed`, `response_format`, ...) are passed upstream untouched.
    """

    message: Annotated[
        str,
        Meta(
            min_length=1,
            pattern=r"\S",
            description="The user's message; at most `MAX_MESSAGE_CHARS` characters.",
            examples=["Olá, como você está?"],
        ),
    ]
    model: ModelId | None = None
    temperature: Temperature | None = None
    max_tokens: (
        Annotated[
            int,
            Meta(ge=1, description="1 to `MAX_TOKENS_LIMIT`; defaults to `MAX_TOKENS_DEFAULT`."),
        ]
        | None
    ) = None
    session_id: (
        Annotated[
            SessionId,
            Meta(description="Continue this session; omit it to start a new one."),
        ]
        | None
    ) = None
    system_prompt: (
        Annotated[
            str,
            Meta(
                min_length=1,
                description="Sets the session's system prompt, sent first on every turn.",
            ),
        ]
        | None
    ) = None
    stream: Annotated[
        bool, Meta(description="Answer as server-sent events instead of one JSON body.")
    ] = False


# No call to any model uses this many tokens or costs this many USD: a usage figure beyond
# them is a bad number, not usage. Checked where OpenRouter's answer is read, and by every
# script that writes one (`app.store.client.lua_script` gives them to Lua).
MAX_TOKENS_PER_CALL = 100_000_000
MAX_COST_PER_CALL = 10_000.0


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Token counts and cost of one upstream call, as OpenRouter reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Annotated[float, Meta(description="USD, as OpenRouter reports it.")] | None = None


class ChatResponse(msgspec.Struct, kw_only=True, frozen=True):
    """The assistant's answer; the first five fields are the seed's contract."""

    response: str
    model_used: Annotated[str, Meta(description="The model that answered (after fallbacks).")]
    session_id: str
    tokens_used: Annotated[int, Meta(description="Total tokens of this turn.")]
    timestamp: Annotated[datetime, Meta(description="When the turn was saved, UTC.")]
    usage: Usage
    finish_reason: str | None
    generation_id: Annotated[str, Meta(description="OpenRouter's generation id.")] | None


# A message's content as OpenAI's API shapes it: text, or a list of parts (`text`,
# `image_url`, ...); null only on an assistant message that calls tools.
MessageContent = str | list[dict[str, Any]] | None


class ToolCallFunction(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    arguments: Annotated[str, Meta(description="The arguments, as a JSON text.")]


class ToolCall(msgspec.Struct, kw_only=True, frozen=True):
    """A function call the model asked for; the `tool` message answering it names its `id`."""

    id: str
    type: str = "function"
    function: ToolCallFunction


class StoredMessage(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One message of a session, as kept in Redis and shown by the API.

    `/chat` stores text only; `/v1/chat/completions` also stores content parts, `name`, an
    assistant's `tool_calls` and a tool result's `tool_call_id`, so tool calls round-trip.
    """

    role: Literal["user", "assistant", "tool"]
    content: MessageContent
    timestamp: datetime
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_details: (
        Annotated[
            list[dict[str, Any]],
            Meta(
                description="A reasoning model's reasoning, as OpenRouter sent it: sent back "
                "with the message on later turns, as OpenRouter asks."
            ),
        ]
        | None
    ) = None
    model: str | None = None
    tokens: int | None = None
    finish_reason: str | None = None
    generation_id: str | None = None
    interrupted: Annotated[
        bool, Meta(description="The stream ended before the answer was complete.")
    ] = False
    error: (
        Annotated[
            str, Meta(description="Why the answer is partial, when the upstream failed mid-stream.")
        ]
        | None
    ) = None


class SessionUsage(msgspec.Struct, kw_only=True, frozen=True):
    """Usage of a session, computed by the worker from committed turns."""

    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    models: dict[str, int] = msgspec.field(default_factory=dict)
    avg_latency_ms: float | None = None
    last_latency_ms: float | None = None
    first_activity: datetime | None = None
    last_activity: datetime | None = None


class SessionSummary(msgspec.Struct, kw_only=True, frozen=True):
    """A session in a listing."""

    session_id: str
    title: Annotated[str, Meta(description="The start of the first user message.")]
    model: Annotated[str, Meta(description="The model of the latest turn.")] | None
    message_count: int
    created_at: datetime
    updated_at: datetime
    usage: SessionUsage


class SessionDetail(msgspec.Struct, kw_only=True, frozen=True):
    """A whole session: metadata, usage and the stored messages, oldest first."""

    session_id: str
    title: str
    model: str | None
    message_count: int
    created_at: datetime
    updated_at: datetime
    expires_at: Annotated[datetime, Meta(description="When Redis drops the session if idle.")]
    system_prompt: str | None
    usage: SessionUsage
    messages: list[StoredMessage]


class SessionPage(msgspec.Struct, kw_only=True, frozen=True):
    """One page of sessions, most recent activity first."""

    sessions: list[SessionSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """Liveness and readiness."""

    status: Literal["ok", "unavailable", "draining"]
    redis: Annotated[str, Meta(description="`ok`, or why Redis cannot be used.")]
    worker: Annotated[
        Literal["ok", "stale", "absent", "unknown"],
        Meta(
            description="The worker's heartbeat: recent, late, missing; `unknown` without Redis. "
            "It does not affect readiness."
        ),
    ]
    version: str


class ErrorDetail(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What went wrong."""

    status: Annotated[int, Meta(description="The HTTP status, repeated.")]
    type: Annotated[str, Meta(description="Machine-readable kind, e.g. `invalid_request`.")]
    message: Annotated[str, Meta(description="For humans.")]
    request_id: str
    field: Annotated[str, Meta(description="The request field at fault.")] | None = None
    upstream_status: (
        Annotated[int, Meta(description="The status OpenRouter answered, when it is the cause.")]
        | None
    ) = None


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    """The body of every error response."""

    error: ErrorDetail


class AdminSessionSummary(SessionSummary, kw_only=True, frozen=True):
    """A session in the operators' listing, with its owner id (`chat:owner:<owner>:sessions`)."""

    owner: str


class AdminSessionDetail(SessionDetail, kw_only=True, frozen=True):
    """A whole session, with its owner id."""

    owner: str


class AdminSessionPage(msgspec.Struct, kw_only=True, frozen=True):
    """One page of every session, most recent activity first."""

    sessions: list[AdminSessionSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class CallStats(msgspec.Struct, kw_only=True):
    """Upstream calls of one day: every call, failed ones by status, and what succeeded cost."""

    requests: int = 0
    errors: int = 0
    errors_by_status: dict[str, int] = msgspec.field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0


class DayStats(msgspec.Struct, kw_only=True, frozen=True):
    """One UTC day, in total and per model (`chat:metrics:<day>`)."""

    day: str
    totals: CallStats
    models: dict[str, CallStats]


class Stats(msgspec.Struct, kw_only=True, frozen=True):
    """Global metrics, newest day first, and the state of the background work."""

    days: list[DayStats]
    sessions: Annotated[int, Meta(description="Entries in `chat:sessions`.")]
    usage_backlog: Annotated[int, Meta(description="Usage events not yet applied.")]
    usage_dead: Annotated[
        int,
        Meta(description="Usage events the worker could not apply, in all: `chat:usage:dead`."),
    ]
    worker: Literal["ok", "stale", "absent"]


class CompletionMessage(msgspec.Struct, kw_only=True, frozen=True):
    """One message of an OpenAI chat completion request, as far as a session stores it."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: MessageContent = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None


class CompletionRequest(msgspec.Struct, kw_only=True, frozen=True):
    """OpenAI's chat completion request.

    Every other field (`tools`, `tool_choice`, `top_p`, `stop`, `response_format`, and
    OpenRouter's `models`, `provider`, `reasoning`, ...) is passed upstream untouched.
    """

    messages: Annotated[
        list[dict[str, Any]],
        Meta(
            min_length=1,
            description="OpenAI's message objects. With `X-Session-Id`, only the new ones.",
        ),
    ]
    model: ModelId | None = None
    stream: bool = False
    temperature: Temperature | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None


class OpenAIErrorDetail(msgspec.Struct, kw_only=True, frozen=True):
    """What went wrong, as OpenAI's API says it."""

    message: str
    type: Annotated[str, Meta(description="OpenAI's kind, e.g. `invalid_request_error`.")]
    code: Annotated[str, Meta(description="Ours, as `error.type` of the other routes.")]
    param: Annotated[str, Meta(description="The request field at fault.")] | None = None


class OpenAIErrorBody(msgspec.Struct, kw_only=True, frozen=True):
    """The body of every error of the `/v1` routes."""

    error: OpenAIErrorDetail
