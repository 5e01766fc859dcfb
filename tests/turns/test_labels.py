"""Metric labels (`app.turns.labels`), from the real catalogue OpenRouter serves."""

from __future__ import annotations

from pathlib import Path

from app.turns.labels import ModelLabels, status_label

CATALOGUE = Path(__file__).resolve().parents[1] / "fixtures" / "openrouter-models.json"


def labels() -> ModelLabels:
    found = ModelLabels()
    found.learn("etag-1", CATALOGUE.read_bytes())
    return found


def test_a_listed_id_is_its_own_label_and_anything_else_is_other() -> None:
    found = labels()

    assert found.model("anthropic/claude-sonnet-4.5") == "anthropic/claude-sonnet-4.5"
    assert found.model("openai/gpt-4o-2024-08-06") == "openai/gpt-4o-2024-08-06"
    assert found.model("openai/gpt-oss-20b:free") == "openai/gpt-oss-20b:free"
    assert found.model("vendor/made-up") == "other"
    assert found.model("") == "other"


def test_the_versioned_slug_a_completion_answers_with_is_labelled_by_its_id() -> None:
    assert labels().model("anthropic/claude-4.5-sonnet-20250929") == "anthropic/claude-sonnet-4.5"


def test_before_any_catalogue_everything_is_other_and_a_broken_copy_keeps_the_last() -> None:
    found = ModelLabels()
    assert found.model("anthropic/claude-sonnet-4.5") == "other"

    found.learn("etag-1", CATALOGUE.read_bytes())
    found.learn("etag-2", b'{"data": 7}')
    assert found.model("anthropic/claude-sonnet-4.5") == "anthropic/claude-sonnet-4.5"


def test_statuses_of_ours_keep_their_label() -> None:
    ours = (200, 400, 401, 402, 403, 404, 408, 413, 422, 429, 499, 500, 502, 503, 504, 524)
    assert [status_label(status) for status in ours] == list(ours)
    assert {status_label(status) for status in (418, 299, 520, 599, 123456)} == {"other"}
