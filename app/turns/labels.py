"""Metric labels: the model and status that name a field of the day's metrics and a series of
`/metrics`, from a bounded set.

Counted as given, every model name a client invents (a failed call records the name it asked
for) would add fields to `chat:metrics:<day>`, kept METRICS_RETENTION_DAYS, and a status read
from an upstream's error body could be any number. A model keeps its own label only when
OpenRouter's catalogue lists it, a status only when it is one of ours; all else is `other`.
"""

from __future__ import annotations

import logging

import msgspec

from app.store.usage import OTHER, StatusLabel

logger = logging.getLogger("app.catalog")

# The statuses of the error table (README, Errors), 499 (a call the client walked away from),
# OpenRouter's 524 (a timeout at its edge), and 200, a turn saved whole.
OWN_STATUSES = frozenset(
    {200, 400, 401, 402, 403, 404, 408, 413, 422, 429, 499, 500, 502, 503, 504, 524}
)


def status_label(status: int) -> StatusLabel:
    return status if status in OWN_STATUSES else OTHER


class _Model(msgspec.Struct):
    id: str | None = None
    # The versioned name a completion answers with: `anthropic/claude-4.5-sonnet-20250929`
    # for `anthropic/claude-sonnet-4.5`.
    canonical_slug: str | None = None


class _Listing(msgspec.Struct):
    data: list[_Model]


_listing_decoder = msgspec.json.Decoder(_Listing)


class ModelLabels:
    """The label of a model: its catalogue id, or `other`. Empty until the process has read a
    copy of the catalogue (Redis and OpenRouter both away at start): then all is `other`."""

    __slots__ = ("_etag", "_labels")

    def __init__(self) -> None:
        self._etag = ""
        self._labels: dict[str, str] = {}

    def learn(self, etag: str, body: bytes) -> None:
        """The ids and canonical slugs of a copy of the catalogue (`etag` names it, so a copy
        already read is not read again)."""
        if etag == self._etag:
            return
        try:
            models = _listing_decoder.decode(body).data
        except msgspec.DecodeError as exc:
            logger.warning(
                "the model catalogue has no ids to label metrics with; the last ones stay",
                extra={"fields": {"error": str(exc)}},
            )
            return
        labels = {m.canonical_slug: m.id for m in models if m.canonical_slug and m.id}
        # An id is its own label, whatever slug another model has.
        labels.update({m.id: m.id for m in models if m.id})
        self._labels, self._etag = labels, etag

    def model(self, name: str) -> str:
        """The label of a model that was asked for, or that answered (an id or its slug)."""
        return self._labels.get(name, OTHER)
