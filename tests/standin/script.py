"""Scripted behaviour: the step a test queues per API key, and the `/models` failure spec.

Both are strict msgspec structs so that a misspelt field in a test's script is rejected by the
control endpoint instead of being silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
HttpStatus = Annotated[int, msgspec.Meta(ge=100, le=599)]


class Reply(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How to answer a request in place of the normal response (shared by chat and /models)."""

    status: HttpStatus | None = None
    message: str | None = None
    metadata: dict[str, Any] | None = None
    headers: dict[str, str | int | float] | None = None
    raw_body: str | None = None
    content_type: str = "text/html"
    delay: NonNegFloat = 0.0
    hang: bool = False
    # Read the request whole, then close the connection without a byte of answer: a server
    # that received the request and died, or a network that lost the answer.
    drop: bool = False

    def __post_init__(self) -> None:
        # An error envelope with a 2xx/3xx status is never what OpenRouter sends; a non-error
        # status only makes sense with explicit bytes.
        if self.raw_body is None and self.status is not None and self.status < 400:
            raise ValueError("a status below 400 needs raw_body")


class Step(Reply, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One scripted chat completion; every field is optional and the default is a plain success."""

    body_error: dict[str, Any] | None = None
    choice_error: dict[str, Any] | None = None
    content: str | None = None
    # OpenAI-style calls (`id`, `type`, `function{name, arguments}`); finish_reason `tool_calls`.
    tool_calls: list[dict[str, Any]] | None = None
    # A reasoning model's `reasoning_details`: in the message, or streamed ahead of the
    # content, each detail's text in two pieces (as OpenRouter streams them).
    reasoning_details: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    model: str | None = None
    fallback: bool = False
    keepalives: NonNegInt = 2
    keepalive_interval: NonNegFloat = 0.0
    first_token_delay: NonNegFloat = 0.0
    chunk_delay: NonNegFloat = 0.0
    pause_after: NonNegInt | None = None
    pause_seconds: NonNegFloat = 0.0
    usage_chunk: Literal["dummy", "empty", "none"] = "dummy"
    # The `usage` object reported in place of the true one (in a stream, by its usage chunk):
    # figures of any type, as a provider may get them wrong.
    usage: dict[str, Any] | None = None
    no_finish: bool = False
    no_done: bool = False
    drop_after: NonNegInt | None = None
    # The connection is broken mid-body, with no proper end: after this many content pieces
    # of a stream, or this many bytes of a JSON answer.
    cut_after: NonNegInt | None = None
    # A JSON answer whose body never ends: a byte now and then, until the client leaves.
    endless: bool = False
    error_after: NonNegInt | None = None
    error_form: Literal["documented", "observed"] = "documented"
    error_code: int | str = 502
    error_message: str = "Provider disconnected mid-stream"

    def __post_init__(self) -> None:
        super().__post_init__()
        ends = [self.drop_after, self.error_after, self.cut_after]
        if sum(end is not None for end in ends) > 1:
            raise ValueError("drop_after, error_after and cut_after exclude each other")


class ModelsFailure(Reply, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How `GET /api/v1/models` fails; it must actually fail in some way."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status is None and self.raw_body is None and not self.hang:
            raise ValueError("a models failure needs status, raw_body or hang")


class ScriptRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    key: str
    steps: list[Step]


class ModelsRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    fail: ModelsFailure | None


DEFAULT_STEP = Step()
SCRIPT_DECODER = msgspec.json.Decoder(ScriptRequest)
MODELS_DECODER = msgspec.json.Decoder(ModelsRequest)
