"""Logging: one JSON object per line in production, readable `key=value` lines on a console."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

# How long a line may wait to be written with the lines after it; warnings and errors do not.

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


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger, uvicorn's and arq's included, through one handler on stderr."""
    # Neither format shows the caller's source line, thread or process: not looking them up
    # saves the frame walk of every record (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # A log stream that broke (its reader gone at shutdown) loses lines quietly, as the
    # logging docs advise for production, instead of tracebacks on that same stream.
    logging.raiseExceptions = False
    handler = logging.StreamHandler(sys.stderr)
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
