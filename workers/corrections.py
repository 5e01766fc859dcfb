"""The worker's correction of cut streams' estimates, from OpenRouter's generation records."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.errors import AppError
from app.store.spend import micros

if TYPE_CHECKING:
    from app.store.estimates import EstimateQueue
    from app.upstream.client import OpenRouterClient

logger = logging.getLogger("workers.corrections")

BATCH = 20


class Corrections:
    """Each run corrects the estimates that are due, asking OpenRouter with the server's key."""

    def __init__(self, queue: EstimateQueue, upstream: OpenRouterClient, key: str) -> None:
        self._queue = queue
        self._upstream = upstream
        self._key = key

    async def run(self) -> int:
        corrected = 0
        for member, estimate in await self._queue.due(BATCH):
            try:
                record = await self._upstream.fetch_generation(self._key, estimate.generation_id)
            except AppError as exc:
                logger.warning(
                    "could not read a generation record",
                    extra={"fields": {"error": exc.message, "try": estimate.tries + 1}},
                )
                record = None
            if record is None:
                if not await self._queue.retry_later(member, estimate):
                    logger.warning(
                        "a cut stream's estimate stays: OpenRouter never reported its generation",
                        extra={"fields": {"generation_id": estimate.generation_id}},
                    )
                continue
            tokens = record.tokens_prompt + record.tokens_completion
            if await self._queue.correct(member, estimate, tokens, micros(record.total_cost)):
                corrected += 1
        return corrected
