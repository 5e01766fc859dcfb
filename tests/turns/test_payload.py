"""The one builder of OpenRouter request bodies (`app.turns.payload`)."""

from __future__ import annotations

import msgspec

from app.store.sessions import History, HistoryMessage
from app.turns.payload import conversation, upstream_payload


def build(
    fields: dict[str, object],
    session_id: str | None = "s1",
    aliases: dict[str, str] | None = None,
) -> dict[str, object]:
    body = upstream_payload(
        fields,
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        session_id=session_id,
        max_tokens_default=1000,
        aliases=aliases or {},
    )
    decoded: dict[str, object] = msgspec.json.decode(body)
    return decoded


def test_our_defaults_fill_what_the_client_left_out() -> None:
    assert build({"top_p": 0.5}) == {
        "top_p": 0.5,
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1000,
        "usage": {"include": True},
        "session_id": "s1",
    }


def test_the_clients_own_limits_and_usage_are_kept() -> None:
    body = build({"max_completion_tokens": 5, "usage": {"include": False}}, session_id=None)
    assert "max_tokens" not in body
    assert body["max_completion_tokens"] == 5
    assert body["usage"] == {"include": False}
    assert "session_id" not in body
    assert build({"max_tokens": 7})["max_tokens"] == 7


def test_the_model_and_messages_are_the_turns() -> None:
    body = build({"model": "client/choice", "messages": []})
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_the_conversation_starts_with_the_system_prompt() -> None:
    history = History(system_prompt="old", messages=[HistoryMessage("user", "before")])
    assert conversation(history, "be brief") == [
        HistoryMessage("system", "be brief"),
        HistoryMessage("user", "before"),
    ]
    assert conversation(history, None) == [HistoryMessage("user", "before")]


def test_fallback_models_are_sent_past_their_aliases() -> None:
    aliases = {"old/model": "new/model"}
    sent = build({"models": ["old/model", "other/model"]}, aliases=aliases)
    assert sent["models"] == ["new/model", "other/model"]
    assert build({"models": ["other/model"]}, aliases=aliases)["models"] == ["other/model"]
