"""What a chat request asks for, and the deterministic completion the stand-in answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.standin import wire
from tests.standin.catalogue import ROUTER, Catalogue, Price, provider_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.standin.script import Step


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    model: str
    models: list[str]
    stream: bool
    max_tokens: int | None


def parse_chat_request(body: Any, catalogue: Catalogue) -> ChatRequest | str:
    """The request, or the message of the 400 OpenRouter would answer with."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: must be a non-empty array"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{index}]: must be an object with a string role"
        if "content" not in message:
            return f"messages[{index}]: content is required"
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return "model: must be a string"
    models = body.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        return "models: must be an array of strings"
    primary = model or (models[0] if models else ROUTER)
    for candidate in (primary, *models):
        if not catalogue.knows(candidate):
            return f"{candidate} is not a valid model ID"
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        return "max_tokens: must be an integer >= 1"
    return ChatRequest(
        messages=messages,
        model=primary,
        models=models,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
    )


def fallback_model(request: ChatRequest) -> str | None:
    """The model that serves once the primary has failed: the first other entry of `models`."""
    return next((m for m in request.models if m != request.model), None)


def echo_text(messages: list[dict[str, Any]]) -> str:
    user_texts = [wire.content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    return f"Echo {len(user_texts)}: {user_texts[-1] if user_texts else ''}"


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(wire.word_count(wire.content_text(m.get("content"))) for m in messages)


@dataclass(frozen=True, slots=True)
class Completion:
    generation_id: str
    created: int
    model: str
    provider: str
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    price: Price

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def usage(self, pieces: Sequence[str] | None = None) -> dict[str, Any]:
        """Usage for the whole reply, or for the pieces actually sent before a stream broke off."""
        text = "".join(self.pieces if pieces is None else pieces)
        return wire.usage(self.prompt_tokens, wire.word_count(text), self.price)


def plan_completion(
    request: ChatRequest,
    step: Step,
    catalogue: Catalogue,
    *,
    served: str,
    generation_id: str,
    created: int,
) -> Completion:
    reported = step.model or served
    price = catalogue.price(reported if catalogue.knows(reported) else served)
    if step.content is not None:
        text = step.content
    else:
        # A reply that calls tools says nothing, as models mostly do.
        text = "" if step.tool_calls else echo_text(request.messages)
    pieces = wire.word_pieces(text)
    truncated = request.max_tokens is not None and wire.word_count(text) > request.max_tokens
    if truncated:
        pieces = pieces[: request.max_tokens]
    return Completion(
        generation_id=generation_id,
        created=created,
        model=reported,
        provider=provider_name(reported),
        pieces=pieces,
        finish_reason=step.finish_reason
        or ("tool_calls" if step.tool_calls else "length" if truncated else "stop"),
        prompt_tokens=prompt_tokens(request.messages),
        price=price,
    )
