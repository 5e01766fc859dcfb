"""Logging: one JSON object per line in production, readable `key=value` lines on a console."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import msgspec

# How long a line may wait to be written with the lines after it; warnings and errors do not.
FLUSH_DELAY_SECONDS = 0.05

_encoder = msgspec.json.Encoder()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class _SecondStamps:
    """A record's time as text: the part down to the second is formatted once a second."""

    def __init__(self, pattern: str, *, utc: bool) -> None:
        self._pattern = pattern
        self._convert = time.gmtime if utc else time.localtime
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> tuple[str, int]:
        """The time down to the second, and the milliseconds."""
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._pattern, self._convert(second))
            self._second = second
        return self._text, int((created - second) * 1000)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamps = _SecondStamps("%Y-%m-%dT%H:%M:%S", utc=True)

    def format(self, record: logging.LogRecord) -> str:
        second, millis = self._stamps(record.created)
        entry: dict[str, Any] = {
            "time": f"{second}.{millis:03d}+00:00",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._stamps = _SecondStamps("%H:%M:%S", utc=False)

    def format(self, record: logging.LogRecord) -> str:
        second, millis = self._stamps(record.created)
        pairs = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{second}.{millis:03d} {record.levelname:<7} {record.name}: "
        line = f"{line}{record.getMessage()} {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line.rstrip()


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes the lines of a busy event loop in batches.

    A line logged inside a running event loop waits up to FLUSH_DELAY_SECONDS for the lines
    after it, and they go out in one write: a write per request line is a system call per
    request. A warning or an error goes out at once, after the lines before it; outside an
    event loop every line does. What is left is written when logging shuts down at exit.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._due_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._due_on is not loop:
            if self._due_on is not None:
                self.flush()  # due on another loop, which may never run again
            self._due_on = loop
            loop.call_later(FLUSH_DELAY_SECONDS, self.flush)

    def flush(self) -> None:
        self.acquire()  # a flush of the loop's timer races records of other threads
        try:
            self._due_on = None
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the stream is closed or its reader gone: nowhere left to say so
        finally:
            self.release()


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger, uvicorn's and arq's included, through one handler on stderr."""
    # Neither format shows the caller's source line, thread or process: not looking them up
    # saves the frame walk of every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.flush()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "arq", "arq.worker", "arq.jobs"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # The request log line (app.request) says more than uvicorn's access line.
    logging.getLogger("uvicorn.access").disabled = True
    # One line per request is ours; httpx would add one per upstream call, key-free but noisy.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
