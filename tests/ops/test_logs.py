"""Log lines (`app.ops.logs`): their format, and when the batching handler writes them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from datetime import UTC, datetime

import pytest

from app.ops.logs import (
    FLUSH_DELAY_SECONDS,
    BatchingStreamHandler,
    ConsoleFormatter,
    JsonFormatter,
)

# A second's start and end, a millisecond's edges, and a change of day.
CREATED = (1764648000.0, 1764648000.0004, 1764648000.0457, 1764648000.999, 1764719999.9995)


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def record(
    message: str, level: int = logging.INFO, created: float | None = None
) -> logging.LogRecord:
    made = logging.LogRecord("app.test", level, "", 0, message, (), None)
    if created is not None:
        made.created = created
    return made


@pytest.fixture
def handler() -> BatchingStreamHandler:
    made = BatchingStreamHandler(Writes())
    made.setFormatter(ConsoleFormatter())
    return made


def writes(handler: BatchingStreamHandler) -> list[str]:
    stream = handler.stream
    assert isinstance(stream, Writes)
    return stream.writes


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


def test_lines_of_a_running_loop_go_out_together_after_the_delay(
    handler: BatchingStreamHandler,
) -> None:
    seen: list[list[str]] = []

    async def log() -> None:
        for n in range(3):
            handler.handle(record(f"line {n}"))
        seen.append(list(writes(handler)))
        await asyncio.sleep(FLUSH_DELAY_SECONDS * 3)
        seen.append(list(writes(handler)))

    asyncio.run(log())
    lines = ["line 0", "line 1", "line 2"]
    assert seen[0] == []
    assert len(seen[1]) == 1
    assert [line.split(": ", 1)[1] for line in seen[1][0].splitlines()] == lines


def test_a_warning_goes_out_at_once_after_the_lines_before_it(
    handler: BatchingStreamHandler,
) -> None:
    async def log() -> list[str]:
        handler.handle(record("first"))
        handler.handle(record("careful", logging.WARNING))
        return list(writes(handler))

    written = asyncio.run(log())
    assert len(written) == 1
    assert [line.split(": ", 1)[1] for line in written[0].splitlines()] == ["first", "careful"]


def test_outside_a_loop_each_line_goes_out_at_once(handler: BatchingStreamHandler) -> None:
    handler.handle(record("one"))
    assert len(writes(handler)) == 1
    handler.handle(record("two"))
    assert [w.split(": ", 1)[1] for w in writes(handler)] == ["one\n", "two\n"]


def test_lines_left_by_a_loop_that_ended_are_not_lost(handler: BatchingStreamHandler) -> None:
    async def log(message: str) -> None:
        handler.handle(record(message))

    asyncio.run(log("from a loop that ended before its flush"))
    assert writes(handler) == []
    asyncio.run(log("from the next loop"))  # the first loop's flush will never run
    assert len(writes(handler)) == 1
    handler.flush()  # as logging.shutdown does at exit
    text = "".join(writes(handler))
    assert [line.split(": ", 1)[1] for line in text.splitlines()] == [
        "from a loop that ended before its flush",
        "from the next loop",
    ]


def test_a_closed_stream_loses_the_lines_quietly() -> None:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    stream.close()
    handler.handle(record("nowhere to go"))  # raises nothing
    handler.flush()


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
