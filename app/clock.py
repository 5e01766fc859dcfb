"""Time as the app counts it: milliseconds since the epoch, and UTC days."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_last_day: tuple[int, str] = (-1, "")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def utc_day(at_ms: int) -> str:
    """The UTC day of a time in ms, as YYYY-MM-DD: formatted once a day, not once a turn."""
    global _last_day
    number = at_ms // DAY_MS
    if _last_day[0] != number:
        _last_day = (number, (_EPOCH + timedelta(days=number)).date().isoformat())
    return _last_day[1]
