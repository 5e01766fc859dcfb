"""Everything the stand-in remembers between requests: scripts, request records, counters.

Only the stand-in's own event loop touches it, so plain containers need no locking.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tests.standin.script import ModelsFailure, Step


class ChatRecord(msgspec.Struct, kw_only=True):
    """One `POST /chat/completions`, as `GET /_standin/requests` reports it."""

    key: str | None
    headers: dict[str, str]
    body: Any
    generation_id: str
    stream: bool = False
    completed: bool = False
    cancelled: bool = False
    received_at: float


@dataclass(slots=True)
class Generation:
    """What `GET /generation` reports; filled in while the completion is being sent."""

    record: ChatRecord
    model: str
    tokens_prompt: int
    tokens_completion: int = 0
    total_cost: float = 0.0
    finish_reason: str | None = None

    def data(self) -> dict[str, Any]:
        return {
            "id": self.record.generation_id,
            "model": self.model,
            "streamed": self.record.stream,
            "cancelled": self.record.cancelled,
            "tokens_prompt": self.tokens_prompt,
            "tokens_completion": self.tokens_completion,
            "total_cost": self.total_cost,
            "finish_reason": self.finish_reason,
        }


class StandinState:
    def __init__(self, max_records: int | None = None) -> None:
        # A long benchmark run would otherwise grow the records without bound.
        self.max_records = max_records
        self.reset()

    def reset(self) -> None:
        self.scripts: dict[str, deque[Step]] = {}
        self.records: deque[ChatRecord] = deque()
        self.generations: dict[str, Generation] = {}
        self.models_failure: ModelsFailure | None = None
        self.models_requests = 0
        self.chat_requests = 0

    def add_record(self, record: ChatRecord) -> None:
        self.chat_requests += 1
        if self.max_records is not None and len(self.records) >= self.max_records:
            evicted = self.records.popleft()
            self.generations.pop(evicted.generation_id, None)
        self.records.append(record)

    def add_steps(self, key: str, steps: list[Step]) -> int:
        queue = self.scripts.setdefault(key, deque())
        queue.extend(steps)
        return len(queue)

    def pop_step(self, key: str | None) -> Step | None:
        if key is None or not (queue := self.scripts.get(key)):
            return None
        step = queue.popleft()
        if not queue:
            del self.scripts[key]
        return step

    def pending_steps(self) -> int:
        return sum(map(len, self.scripts.values()))

    def requests(self, key: str | None) -> list[ChatRecord]:
        return [r for r in self.records if key is None or r.key == key]
