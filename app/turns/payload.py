"""The body of a call to OpenRouter, for every kind of turn: the client's fields with ours."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from app.store.sessions import HistoryMessage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from app.store.sessions import History

_encoder = msgspec.json.Encoder()


def conversation(history: History, system_prompt: str | None) -> list[Any]:
    """What goes upstream ahead of a turn's new messages: the system prompt, the history."""
    head = [HistoryMessage("system", system_prompt)] if system_prompt else []
    return [*head, *history.messages]


def upstream_payload(
    fields: Mapping[str, Any],
    *,
    model: str,
    messages: list[Any],
    session_id: str | None,
    max_tokens_default: int,
    aliases: Mapping[str, str],
) -> bytes:
    """`fields` (what the client sent that goes upstream as is) with the turn's model and
    messages, and our defaults where the client set none; fallback `models` past their
    aliases, as the model is."""
    body = {**fields, "model": model, "messages": messages}
    fallbacks = body.get("models")
    if isinstance(fallbacks, list) and any(name in aliases for name in fallbacks):
        body["models"] = [aliases.get(name, name) for name in fallbacks]
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = max_tokens_default
    # Asks for `usage.cost` from deployments that still need the opt-in.
    body.setdefault("usage", {"include": True})
    if session_id is not None:
        # OpenRouter groups the session's calls and keeps them on one provider (caching).
        body["session_id"] = session_id
    return _encoder.encode(body)
