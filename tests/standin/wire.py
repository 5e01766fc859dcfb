"""OpenRouter's wire format: completion bodies, stream chunks, SSE framing and error envelopes."""

from __future__ import annotations

import re
import secrets
import string
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tests.standin.catalogue import Price

USER_ID = "user_standin"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"

_encoder = msgspec.json.Encoder()
_ALPHANUMERICS = string.ascii_letters + string.digits
_WORD_PIECE = re.compile(r"\s*\S+")

# Default `error.message` per status, from the texts OpenRouter documents or was seen sending.
DEFAULT_MESSAGES = {
    400: "Invalid request parameters",
    401: "User not found.",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Forbidden",
    408: "Operation timed out. Please try again later.",
    413: "Request payload too large",
    422: "Invalid argument",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "Service temporarily unavailable",
    524: "Request timed out. Please try again later.",
    529: "Provider returned error",
}

ERROR_TYPES = {
    400: "invalid_request",
    401: "authentication",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    429: "rate_limit_exceeded",
    502: "provider_unavailable",
    503: "provider_unavailable",
    529: "provider_overloaded",
}


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def sse(obj: Any) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def new_generation_id(created: int) -> str:
    suffix = "".join(secrets.choice(_ALPHANUMERICS) for _ in range(20))
    return f"gen-{created}-{suffix}"


# ---- text and token accounting -------------------------------------------------------------


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or the text parts of a part list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def word_count(text: str) -> int:
    return len(text.split())


def word_pieces(text: str) -> list[str]:
    """Stream pieces: each word with its leading whitespace, so that they join back to `text`."""
    pieces = _WORD_PIECE.findall(text)
    tail = text[sum(map(len, pieces)) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces.append(tail)
    return pieces


def usage(prompt_tokens: int, completion_tokens: int, price: Price) -> dict[str, Any]:
    prompt_cost = price.prompt * prompt_tokens
    completion_cost = price.completion * completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": float(prompt_cost + completion_cost),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": float(prompt_cost),
            "upstream_inference_completions_cost": float(completion_cost),
        },
    }


# ---- error envelopes -----------------------------------------------------------------------


def error_body(
    status: int,
    message: str | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    user_id: bool = True,
) -> bytes:
    if message is None:
        message = DEFAULT_MESSAGES.get(status) or _status_phrase(status)
    error: dict[str, Any] = {"message": message, "code": status}
    if metadata is not None:
        error["metadata"] = metadata
    envelope: dict[str, Any] = {"error": error}
    if user_id:
        envelope["user_id"] = USER_ID
    return encode(envelope)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# ---- completions ---------------------------------------------------------------------------


def completion(
    *,
    generation_id: str,
    provider: str,
    model: str,
    created: int,
    content: str,
    finish_reason: str,
    usage_body: dict[str, Any],
    error: dict[str, Any] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning_details: list[dict[str, Any]] | None = None,
) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "reasoning": None,
    }
    if reasoning_details:
        message["reasoning_details"] = reasoning_details
    if tool_calls:
        message["tool_calls"] = [{"index": i, **call} for i, call in enumerate(tool_calls)]
    choice: dict[str, Any] = {
        "index": 0,
        "logprobs": None,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "message": message,
    }
    if error is not None:
        choice["error"] = error
    return encode(
        {
            "id": generation_id,
            "provider": provider,
            "model": model,
            "object": "chat.completion",
            "created": created,
            "choices": [choice],
            "usage": usage_body,
        }
    )


class ChunkWriter:
    """Builds the `data:` events of one stream; every chunk repeats the same head fields."""

    def __init__(self, *, generation_id: str, provider: str, model: str, created: int) -> None:
        self.generation_id = generation_id
        self.provider = provider
        self.model = model
        self.created = created

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(
            {
                "id": self.generation_id,
                "provider": self.provider,
                "model": self.model,
                "object": "chat.completion.chunk",
                "created": self.created,
                "choices": choices,
                **extra,
            }
        )

    @staticmethod
    def _choice(content: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
            "logprobs": None,
        }

    def content(self, text: str) -> bytes:
        return self._chunk([self._choice(text)])

    def reasoning_pieces(self, detail: dict[str, Any]) -> list[bytes]:
        """One reasoning detail as two deltas: its text (or summary, or data) split in two."""
        field = next((f for f in ("text", "summary", "data") if f in detail), None)
        if field is None:
            return [self._reasoning_chunk(detail)]
        text = str(detail[field])
        half = len(text) // 2
        first = {**detail, field: text[:half]}
        rest = {"type": detail.get("type"), "index": detail.get("index"), field: text[half:]}
        return [self._reasoning_chunk(first), self._reasoning_chunk(rest)]

    def _reasoning_chunk(self, piece: dict[str, Any]) -> bytes:
        delta = {"role": "assistant", "content": "", "reasoning": None,
                 "reasoning_details": [piece]}  # fmt: skip
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def tool_call_fragments(self, index: int, call: dict[str, Any]) -> list[bytes]:
        """One call as OpenRouter streams it: id, type and name first, then the arguments in
        two pieces keyed by `index` alone."""
        function = call.get("function") or {}
        arguments = str(function.get("arguments", ""))
        half = len(arguments) // 2
        head = {"index": index, "id": call.get("id"), "type": call.get("type", "function"),
                "function": {"name": function.get("name"), "arguments": ""}}  # fmt: skip
        pieces = [head] + [
            {"index": index, "function": {"arguments": piece}}
            for piece in (arguments[:half], arguments[half:])
            if piece
        ]
        return [self._chunk([self._tool_choice(piece)]) for piece in pieces]

    @staticmethod
    def _tool_choice(fragment: dict[str, Any]) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": None, "tool_calls": [fragment]},
            "finish_reason": None,
            "native_finish_reason": None,
            "logprobs": None,
        }

    def finish(self, finish_reason: str) -> bytes:
        return self._chunk([self._choice("", finish_reason)])

    def usage(self, usage_body: dict[str, Any], *, empty_choices: bool) -> bytes:
        # The docs promise `choices: []`; the 2026 capture carries one dummy choice instead.
        choices = [] if empty_choices else [self._choice("")]
        return self._chunk(choices, usage=usage_body)

    def documented_error(self, error: dict[str, Any]) -> bytes:
        # Key order and the bare choice mirror the example in OpenRouter's streaming docs.
        return sse(
            {
                "id": self.generation_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "provider": self.provider,
                "error": error,
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )

    def observed_error(self, error: dict[str, Any], usage_body: dict[str, Any]) -> bytes:
        # As captured in 2025-11: error next to `provider`, a null finish_reason, and usage.
        return sse(
            {
                "id": self.generation_id,
                "provider": self.provider,
                "error": error,
                "model": self.model,
                "object": "chat.completion.chunk",
                "created": self.created,
                "choices": [self._choice("")],
                "usage": usage_body,
            }
        )


def stream_error(
    code: int | str, message: str, metadata: dict[str, Any] | None, *, typed: bool
) -> dict[str, Any]:
    """The `error` object of a mid-stream error event; `typed` adds the documented error_type."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is None and typed and isinstance(code, int) and code in ERROR_TYPES:
        metadata = {"error_type": ERROR_TYPES[code]}
    if metadata is not None:
        error["metadata"] = metadata
    return error
