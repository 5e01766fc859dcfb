"""OpenAI's chat completion request as a turn: which messages a session stores, what goes up.

With a session, the request's messages are the new ones:
- `system` and `developer` messages set the session's system prompt (joined by a blank line
  when there are several; text parts only) and are not stored among the messages;
- every other message (user, tool results, assistant messages the client adds) is stored as
  sent: role, content (text or parts), `name`, `tool_calls`, `tool_call_id`; other fields of
  a message reach upstream on this turn only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from app.errors import InvalidRequest, from_msgspec
from app.schemas import SESSION_ID_PATTERN, CompletionMessage, StoredMessage

if TYPE_CHECKING:
    from app.schemas import MessageContent

# `X-Session-Id: new` starts a session; the response's `X-Session-Id` names it.
SESSION_HEADER = "X-Session-Id"
NEW_SESSION = "new"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
SYSTEM_ROLES = frozenset({"system", "developer"})

_encoder = msgspec.json.Encoder()


class _Messages(msgspec.Struct, frozen=True):
    messages: list[CompletionMessage]


class StoredSizes(NamedTuple):
    """What one message a session stores may hold (the settings of the same names)."""

    max_message_chars: int  # its text
    max_stored_message_bytes: int  # all of it, as JSON: images, tool calls and all
    max_system_prompt_chars: int


class IncomingTurn(msgspec.Struct, kw_only=True, frozen=True):
    """The new part of a request that continues a session."""

    system_prompt: str | None  # None keeps the session's
    stored: list[StoredMessage]
    upstream: list[dict[str, Any]]  # the same messages, as the client sent them


def session_from_header(value: str | None) -> str | None:
    """The session a request asks for: None, `NEW_SESSION`, or a checked id."""
    if value is None:
        return None
    if not _SESSION_ID.match(value):
        raise InvalidRequest(
            f"{SESSION_HEADER}: `new`, or a session id of 1 to 64 characters from "
            "`A-Z a-z 0-9 _ -`",
            field=SESSION_HEADER,
        )
    return value


def text_of(content: MessageContent) -> str:
    """The text of a content: itself, or its text parts joined by newlines."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(
        part["text"]
        for part in content
        if part.get("type") == "text" and isinstance(part.get("text"), str)
    )


def _checked(messages: list[CompletionMessage]) -> None:
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequest(
                f"{where}.tool_call_id: a tool message names the call it answers",
                field=f"{where}.tool_call_id",
            )
        if message.content is None and message.role != "assistant":
            raise InvalidRequest(
                f"{where}.content: a {message.role} message needs content",
                field=f"{where}.content",
            )
    if all(message.role in SYSTEM_ROLES for message in messages):
        raise InvalidRequest(
            "messages: with a session, send at least one new user or tool message",
            field="messages",
        )


def _sized(
    messages: list[CompletionMessage], raw_messages: list[dict[str, Any]], sizes: StoredSizes
) -> None:
    """A session stores what it is sent: each message within its limits, or a 400 naming it."""
    for index, (message, raw) in enumerate(zip(messages, raw_messages, strict=True)):
        if message.role in SYSTEM_ROLES:
            continue
        where = f"messages[{index}]"
        chars = len(text_of(message.content))
        if chars > sizes.max_message_chars:
            raise InvalidRequest(
                f"{where}.content: {chars} characters; a session stores at most "
                f"{sizes.max_message_chars} a message",
                field=f"{where}.content",
            )
        size = len(_encoder.encode(raw))
        if size > sizes.max_stored_message_bytes:
            raise InvalidRequest(
                f"{where}: {size} bytes; a session stores at most "
                f"{sizes.max_stored_message_bytes} a message (send a large image by URL, or "
                "without X-Session-Id)",
                field=where,
            )


def incoming_turn(raw_messages: list[dict[str, Any]], sizes: StoredSizes) -> IncomingTurn:
    """Validate the new messages of a session's turn and split off the system prompt."""
    try:
        messages = msgspec.convert({"messages": raw_messages}, _Messages).messages
    except msgspec.ValidationError as exc:
        raise from_msgspec(exc) from None
    _checked(messages)
    _sized(messages, raw_messages, sizes)
    now = datetime.now(UTC)
    system = "\n\n".join(text_of(m.content) for m in messages if m.role in SYSTEM_ROLES)
    if len(system) > sizes.max_system_prompt_chars:
        raise InvalidRequest(
            f"messages: the system prompt is {len(system)} characters; at most "
            f"{sizes.max_system_prompt_chars} are allowed",
            field="messages",
        )
    kept = [(m, raw) for m, raw in zip(messages, raw_messages, strict=True)
            if m.role not in SYSTEM_ROLES]  # fmt: skip
    return IncomingTurn(
        system_prompt=system or None,
        stored=[
            StoredMessage(
                role=message.role,  # type: ignore[arg-type]  # system roles are split off
                content=message.content,
                timestamp=now,
                name=message.name,
                tool_calls=message.tool_calls,
                tool_call_id=message.tool_call_id,
                reasoning_details=message.reasoning_details,
            )
            for message, _ in kept
        ],
        upstream=[raw for _, raw in kept],
    )
