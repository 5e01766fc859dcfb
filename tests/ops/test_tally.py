"""Tallied metric updates (`app.ops.tally`) against prometheus_client's own."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.ops import tally
from app.ops.tally import FLUSH_SECONDS, CounterTally, GaugeTally, HistogramTally

BUCKETS = (0.005, 0.01, 0.025, 0.5, 1, 10)
# Bounds themselves, between them, zero, negative, and past the last bound (+Inf).
OBSERVED = (0.0, 0.005, 0.0050001, 0.01, 0.3, 0.5, 0.5, 1, 9.99, 10, 11, 1e6, -2)


def samples(registry: CollectorRegistry, name: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found.append((sample.name.replace(name, "x"), sample.labels, sample.value))
    return found


def test_a_tallied_histogram_flushes_what_observe_would_have_written() -> None:
    plain, tallied = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("direct", "h", ["route"], buckets=BUCKETS, registry=plain)
    through = Histogram("through", "h", ["route"], buckets=BUCKETS, registry=tallied)
    histogram = HistogramTally(through.labels("/chat"))

    async def observe() -> None:  # in a loop, as on the hot path: the flush waits
        for value in OBSERVED:
            direct.labels("/chat").observe(value)
            histogram.observe(value)

    asyncio.run(observe())
    assert samples(tallied, "through")[-2:] == [
        ("x_count", {"route": "/chat"}, 0.0),
        ("x_sum", {"route": "/chat"}, 0.0),
    ]
    histogram.flush()
    histogram.flush()  # a second flush has nothing left to add

    assert samples(tallied, "through") == samples(plain, "direct")


def test_a_tallied_counter_and_gauge_write_on_flush() -> None:
    registry = CollectorRegistry()
    counter = CounterTally(Counter("turns", "c", registry=registry))
    gauge = GaugeTally(Gauge("in_flight", "g", registry=registry))

    async def update(steps: int) -> None:
        counter.inc()
        counter.inc(2.5)
        for _ in range(steps):
            gauge.inc()
        gauge.dec()

    asyncio.run(update(3))
    assert registry.get_sample_value("turns_total") == 0
    assert registry.get_sample_value("in_flight") == 0
    tally.flush()
    assert registry.get_sample_value("turns_total") == 3.5
    assert registry.get_sample_value("in_flight") == 2

    asyncio.run(update(0))
    tally.flush()
    assert registry.get_sample_value("turns_total") == 7
    assert registry.get_sample_value("in_flight") == 1


def test_updates_in_an_event_loop_are_written_a_second_later() -> None:
    registry = CollectorRegistry()
    counter = CounterTally(Counter("later", "c", registry=registry))
    tally.flush()  # what an earlier test's closed loop left due

    async def count_and_wait() -> tuple[float | None, float | None]:
        counter.inc()
        at_once = registry.get_sample_value("later_total")
        await asyncio.sleep(FLUSH_SECONDS + 0.3)
        return at_once, registry.get_sample_value("later_total")

    assert asyncio.run(count_and_wait()) == (0, 1)
    assert asyncio.run(count_and_wait()) == (1, 2)


def test_a_loop_closed_with_a_flush_due_leaves_its_updates_to_the_next_flush() -> None:
    registry = CollectorRegistry()
    counter = CounterTally(Counter("closed", "c", registry=registry))

    async def count() -> None:
        counter.inc()

    asyncio.run(count())
    assert registry.get_sample_value("closed_total") == 0
    tally.flush()  # as a scrape or a shutdown does
    assert registry.get_sample_value("closed_total") == 1


def test_an_update_outside_an_event_loop_is_written_at_once() -> None:
    registry = CollectorRegistry()
    counter = CounterTally(Counter("now", "c", registry=registry))
    counter.inc()
    assert registry.get_sample_value("now_total") == 1


def test_a_histogram_child_keeps_its_bounds_sum_and_buckets_where_the_tally_adds() -> None:
    """The contract with prometheus_client that `HistogramTally.flush` leans on: a labelled
    child's `_upper_bounds` (ending in +Inf), and one `_sum` and one value per bucket in
    `_buckets`, each with `inc`. Fails naming the library if an upgrade moves them."""
    who = f"prometheus_client {version('prometheus-client')}"
    child = Histogram("contract", "h", ["route"], buckets=BUCKETS, registry=None).labels("/x")
    bounds = child._upper_bounds
    assert list(bounds) == [*BUCKETS, float("inf")], f"{who}: Histogram._upper_bounds"
    assert len(child._buckets) == len(bounds), f"{who}: Histogram._buckets"
    assert all(callable(getattr(bucket, "inc", None)) for bucket in child._buckets), who
    assert callable(getattr(child._sum, "inc", None)), f"{who}: Histogram._sum"
