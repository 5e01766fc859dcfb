"""Exemplars: beside each bucket of the request latency histogram, the id of a recent request.

prometheus_client's multiprocess mode keeps no exemplars, so each API process keeps its own:
the latest request of every (route, bucket), written to PROMETHEUS_MULTIPROC_DIR at most once a
second. `GET /metrics` in the OpenMetrics format attaches them to the bucket lines, so a spike
on a dashboard leads to the log lines of its requests (`request_id`).
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

FLUSH_SECONDS = 1.0
FILE_PREFIX = "exemplars_"
# OpenMetrics allows 128 characters of exemplar labels, names included.
MAX_REQUEST_ID = 128 - len("request_id")


class Recorded(msgspec.Struct, array_like=True, frozen=True):
    """The latest request of one (route, bucket)."""

    route: str
    le: str
    request_id: str
    seconds: float
    at: float  # unix time


_file_encoder = msgspec.json.Encoder()
_file_decoder = msgspec.json.Decoder(list[Recorded])


class ExemplarStore:
    """One process's exemplars; `record` is a bisect and a dict store on the hot path."""

    def __init__(self, buckets: Iterable[float], directory: str | None) -> None:
        self._bounds = sorted(buckets)
        self._labels = [*map(floatToGoString, self._bounds), "+Inf"]
        self._latest: dict[tuple[str, int], Recorded] = {}
        self._path = Path(directory, f"{FILE_PREFIX}{os.getpid()}.json") if directory else None
        self._flushed = 0.0

    def record(self, route: str, seconds: float, request_id: str) -> None:
        if len(request_id) > MAX_REQUEST_ID:
            return
        # The smallest bucket the value falls in: le is "less than or equal".
        bucket = bisect_left(self._bounds, seconds)
        now = time.time()
        self._latest[route, bucket] = Recorded(
            route, self._labels[bucket], request_id, seconds, now
        )
        if self._path is not None and now - self._flushed >= FLUSH_SECONDS:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write this process's exemplars for the process that serves the scrape."""
        if self._path is None:
            return
        self._flushed = time.time() if now is None else now
        partial = self._path.with_suffix(".tmp")
        partial.write_bytes(_file_encoder.encode(list(self._latest.values())))
        # A reader never sees half a file.
        partial.replace(self._path)

    def everyone(self) -> dict[tuple[str, str], Recorded]:
        """The latest exemplar of each (route, le) over every process of the replica."""
        self.flush()
        found: list[Recorded] = []
        if self._path is None:
            found.extend(self._latest.values())
        else:
            for path in self._path.parent.glob(f"{FILE_PREFIX}*.json"):
                # A process that just replaced its file, or died: skip what cannot be read.
                with contextlib.suppress(OSError, msgspec.DecodeError):
                    found.extend(_file_decoder.decode(path.read_bytes()))
        latest: dict[tuple[str, str], Recorded] = {}
        for item in found:
            key = (item.route, item.le)
            if key not in latest or latest[key].at < item.at:
                latest[key] = item
        return latest


class WithExemplars:
    """A collector that yields `source`'s metrics with exemplars on `histogram`'s buckets."""

    def __init__(self, source: Collector, histogram: str, store: ExemplarStore) -> None:
        self._source = source
        self._histogram = histogram
        self._store = store

    def collect(self) -> Iterator[Metric]:
        exemplars = self._store.everyone()
        bucket = f"{self._histogram}_bucket"
        for family in self._source.collect():
            if family.name == self._histogram:
                family.samples = [
                    sample._replace(exemplar=_exemplar(recorded))
                    if sample.name == bucket
                    and (recorded := exemplars.get((sample.labels["route"], sample.labels["le"])))
                    else sample
                    for sample in family.samples
                ]
            yield family


def _exemplar(recorded: Recorded) -> Exemplar:
    return Exemplar({"request_id": recorded.request_id}, recorded.seconds, recorded.at)
