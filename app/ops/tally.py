"""Metric updates of the hot path, added up in the process and written once a second.

With PROMETHEUS_MULTIPROC_DIR set, each prometheus_client update takes a lock, checks the pid
and packs a value into a memory-mapped file: about 1.2 us, eleven times a turn. A tally adds to
a Python number instead, and `flush` writes the sums: a second after the first update it holds,
before this process answers a scrape, and at shutdown. So a scrape served by another process
of the replica sees this one's updates at most about a second late.

Kept because it pays: against prometheus_client called directly, 12-13% of a turn's CPU at 8
and 32 connections, 4% at 1 (`tests/benchmarks/test_versions.py`).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

FLUSH_SECONDS = 1.0


class _Flusher:
    """The tallies of the process, and whether a flush is already coming."""

    def __init__(self) -> None:
        self.tallies: list[CounterTally | GaugeTally | HistogramTally] = []
        self.idle = True  # no flush scheduled: the next update schedules one

    def schedule(self) -> None:
        """A flush in a second, from the first update after the last flush.

        An event loop that closes with its flush still due (a test's) leaves its updates, and
        those of any later loop, to the next explicit flush (a scrape, a shutdown); updates
        after that schedule their flush again.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): written at once
            self.flush()
            return
        self.idle = False
        loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self.idle = True
        for tally in self.tallies:
            tally.flush()


_flusher = _Flusher()


def flush() -> None:
    """Write every tally's updates to prometheus_client's values."""
    _flusher.flush()


class CounterTally:
    """Increments of one counter (a labelled child)."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._pending = 0.0
        _flusher.tallies.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self._pending += amount
        if _flusher.idle:
            _flusher.schedule()

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0.0
            self._child.inc(pending)


class GaugeTally:
    """A gauge of this process (multiprocess mode `livesum`): its value is written, not each
    change, so a request that starts and ends between two flushes writes nothing."""

    __slots__ = ("_child", "_value", "_written")

    def __init__(self, child: Gauge) -> None:
        self._child = child
        self._value = 0.0
        self._written = 0.0
        _flusher.tallies.append(self)

    def inc(self) -> None:
        self._value += 1
        if _flusher.idle:
            _flusher.schedule()

    def dec(self) -> None:
        self._value -= 1
        if _flusher.idle:
            _flusher.schedule()

    def flush(self) -> None:
        if self._value != self._written:
            self._written = self._value
            self._child.set(self._value)


class HistogramTally:
    """Observations of one histogram (a labelled child), counted per bucket.

    prometheus_client has no public call that adds several observations at once, so the
    flush adds to the child's own bucket and sum values, as its `observe` does one at a time;
    `tests/ops/test_tally.py` holds the result to what `observe` gives, and names the
    library if an upgrade moves them.
    """

    __slots__ = ("_child", "_counts", "_sum", "_upper_bounds")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._upper_bounds: list[float] = child._upper_bounds  # the last one is +Inf
        self._counts = [0] * len(self._upper_bounds)
        self._sum = 0.0
        _flusher.tallies.append(self)

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is at least the value, as `Histogram.observe` picks.
        self._counts[bisect_left(self._upper_bounds, amount)] += 1
        self._sum += amount
        if _flusher.idle:
            _flusher.schedule()

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        self._counts = [0] * len(counts)
        self._child._sum.inc(self._sum)
        self._sum = 0.0
        for bucket, count in zip(self._child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
