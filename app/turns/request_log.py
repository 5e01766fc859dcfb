"""What a request's log line says of its turn: filled by the handler and the turn, written by
the HTTP edge's request context (`app.http.context`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.turns.callers import Caller


class RequestLog:
    """What the request log line says; handlers add the caller, session, model and tokens."""

    __slots__ = ("caller", "first_byte", "model", "request_id", "session_id", "status", "tokens")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.status = 0
        self.first_byte = 0.0
        self.session_id: str | None = None
        self.model: str | None = None
        self.tokens: int | None = None
        self.caller: Caller | None = None

    def quota_headers(self) -> list[tuple[bytes, bytes]]:
        """The caller's rate-limit headers, once a turn of theirs was admitted or refused."""
        quota = self.caller.quota.quota if self.caller is not None else None
        return quota.headers() if quota is not None else []
