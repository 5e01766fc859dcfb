"""Log lines (`app.ops.logs`): their format, and the standard library switch it sets."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

import pytest

from app.ops.logs import ConsoleFormatter, JsonFormatter

# A second's start and end, a millisecond's edges, and a change of day.
CREATED = (1764648000.0, 1764648000.0004, 1764648000.0457, 1764648000.999, 1764719999.9995)


def record(
    message: str, level: int = logging.INFO, created: float | None = None
) -> logging.LogRecord:
    made = logging.LogRecord("app.test", level, "", 0, message, (), None)
    if created is not None:
        made.created = created
    return made


@pytest.mark.parametrize("created", CREATED)
def test_json_time_is_utc_to_the_millisecond(created: float) -> None:
    line = json.loads(JsonFormatter().format(record("hi", created=created)))
    expected = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    assert line == {"time": expected, "level": "INFO", "logger": "app.test", "message": "hi"}


@pytest.mark.parametrize("created", CREATED)
def test_console_time_is_local_to_the_millisecond(created: float) -> None:
    line = ConsoleFormatter().format(record("hi", created=created))
    expected = datetime.fromtimestamp(created).strftime("%H:%M:%S.%f")[:-3]
    assert line == f"{expected} INFO    app.test: hi"


def test_a_formatter_shows_the_seconds_of_each_record_in_turn() -> None:
    formatter = JsonFormatter()
    times = [json.loads(formatter.format(record("x", created=at)))["time"] for at in CREATED]
    assert times == [
        datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds") for at in CREATED
    ]


def test_the_standard_librarys_switch_for_caller_lookups_still_skips_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`configure_logging` sets `logging._srcfile = None`, the switch the Logging HOWTO's
    "Optimization" names: records then carry no caller, and no frame is walked for one."""
    assert hasattr(logging, "_srcfile"), "logging no longer has _srcfile"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("test.srcfile")
    logger.addHandler(handler)
    try:
        monkeypatch.setattr(logging, "_srcfile", None)
        logger.warning("without caller")
        # The value logging gives it at import (a test before may have switched it off).
        source = os.path.normcase(logging.addLevelName.__code__.co_filename)
        monkeypatch.setattr(logging, "_srcfile", source)
        logger.warning("with caller")
    finally:
        logger.removeHandler(handler)
    assert [record.funcName for record in records] == [
        "(unknown function)",
        "test_the_standard_librarys_switch_for_caller_lookups_still_skips_them",
    ]
