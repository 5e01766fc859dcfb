"""The worker's health, as the API reads it from the heartbeat key."""

from __future__ import annotations

from typing import Literal

# The worker beats every 5 s; three missed beats make it stale.
HEARTBEAT_STALE_SECONDS = 15.0

WorkerState = Literal["ok", "stale", "absent"]


def worker_state(beat: bytes | None, now: float) -> WorkerState:
    """`absent` once the heartbeat key expired (2 minutes without a beat)."""
    if beat is None:
        return "absent"
    return "ok" if now - float(beat) <= HEARTBEAT_STALE_SECONDS else "stale"
