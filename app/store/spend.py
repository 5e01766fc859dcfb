"""What a turn may spend and what it spent: the figures the limits hold and settle.

A turn's hold is its worst case: the prompt at `PROMPT_BYTES_PER_TOKEN` bytes a token (fewer
than most text has, so it errs high) and all of its `max_tokens`. What it spent is OpenRouter's
`usage`; when a stream is cut before that arrives, an estimate from the bytes sent and relayed
at `ESTIMATE_BYTES_PER_TOKEN`, closer to what text averages. Money is counted in whole
micro-USD, so Redis adds integers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Worst case of the hold: a token of CJK text is about three bytes of UTF-8, of English four.
PROMPT_BYTES_PER_TOKEN = 3
# The estimate of a cut stream: English averages about four bytes a token.
ESTIMATE_BYTES_PER_TOKEN = 4
# A hold lapses after this long: a replica that died mid-turn gives it back no later.
HOLD_MS = 15 * 60_000
# How long a settled turn stays marked, so that its replay changes nothing.
SETTLED_MS = 120_000

MICROS = 1_000_000


class Prices(NamedTuple):
    """A model's prices in micro-USD: per prompt token, per completion token, per request."""

    prompt: float
    completion: float
    request: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Micro-USD, rounded up."""
        return math.ceil(
            prompt_tokens * self.prompt + completion_tokens * self.completion + self.request
        )


FREE = Prices(0.0, 0.0, 0.0)


def micros(usd: float) -> int:
    """USD as whole micro-USD, rounded up: a budget is never undercounted."""
    return math.ceil(usd * MICROS - 1e-9) if usd > 0 else 0


def estimated_tokens(size: int) -> int:
    """The tokens of `size` bytes of text, as a cut stream's estimate counts them."""
    return math.ceil(size / ESTIMATE_BYTES_PER_TOKEN)
