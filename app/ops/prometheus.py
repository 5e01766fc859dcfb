"""Prometheus metrics of the API: what is recorded, and the cheap calls that record it.

Every API process of a replica writes its own counters to PROMETHEUS_MULTIPROC_DIR (set by
`chat-backend web` before this module is imported) and `GET /metrics` adds them up. Without that
variable, as when the app runs in a test's process, the counters live in this process.

On the hot path a recording is a dict lookup and an addition: labelled children are made once
per label value and kept, since `labels()` takes a lock and validates its arguments each call,
and their updates are tallied in the process and written once a second (`app.ops.tally`). Rare
updates (errors, streams) are written at once.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

from app.ops.exemplars import ExemplarStore
from app.ops.tally import CounterTally, GaugeTally, HistogramTally

# Seconds: from a fast model's first token to a long answer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
UNMATCHED_ROUTE = "unmatched"

REQUESTS = Counter(
    "chat_http_requests", "Requests answered, by route template and status", ("route", "status")
)
REQUEST_SECONDS_NAME = "chat_http_request_duration_seconds"
REQUEST_SECONDS = Histogram(
    REQUEST_SECONDS_NAME,
    "Time from a request's arrival to the end of its response (a stream's whole life)",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "chat_http_requests_in_flight", "Requests being served", multiprocess_mode="livesum"
)
STREAMS = Gauge("chat_streams_in_flight", "Streams being relayed", multiprocess_mode="livesum")
UPSTREAM_SECONDS = Histogram(
    "chat_upstream_duration_seconds",
    "OpenRouter's time: a whole completion, or a stream until its response began",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "chat_stream_first_token_seconds",
    "Time from sending a streaming request upstream to relaying its first text",
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("chat_tokens", "Tokens of saved turns, by model", ["model", "kind"])
COST = Counter("chat_cost_usd", "Cost of saved turns in USD as OpenRouter reports it", ["model"])
TURNS = Counter("chat_turns", "Turns saved, by model", ["model"])
UPSTREAM_ERRORS = Counter(
    "chat_upstream_errors", "Failed upstream calls, by OpenRouter's status", ["status"]
)
REDIS_ERRORS = Counter("chat_redis_errors", "Requests that failed because Redis did not answer")
# What the worker keeps in Redis, as the latest scrape of any process read it there.
USAGE_BACKLOG = Gauge(
    "chat_usage_inbox_events", "Usage events not applied yet", multiprocess_mode="mostrecent"
)
USAGE_DEAD = Gauge(
    "chat_usage_dead_events",
    "Usage events the worker could not apply, in all (set aside in chat:usage:dead)",
    multiprocess_mode="mostrecent",
)

# The request id of a recent request per bucket of REQUEST_SECONDS, for /metrics.
EXEMPLARS = ExemplarStore(LATENCY_BUCKETS, os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)

UPSTREAM_COMPLETE = HistogramTally(UPSTREAM_SECONDS.labels("complete"))
UPSTREAM_STREAM_OPEN = HistogramTally(UPSTREAM_SECONDS.labels("stream_open"))
_in_flight = GaugeTally(IN_FLIGHT)


class _ModelCounters:
    __slots__ = ("completion_tokens", "cost", "prompt_tokens", "turns")

    def __init__(self, model: str) -> None:
        self.turns = CounterTally(TURNS.labels(model))
        self.prompt_tokens = CounterTally(TOKENS.labels(model, "prompt"))
        self.completion_tokens = CounterTally(TOKENS.labels(model, "completion"))
        self.cost = CounterTally(COST.labels(model))


_requests: dict[tuple[str, int], CounterTally] = {}
_durations: dict[str, HistogramTally] = {}
_models: dict[str, _ModelCounters] = {}
_upstream_errors: dict[int | str, Counter] = {}


def request_started() -> None:
    _in_flight.inc()


def request_finished(template: str | None, status: int, seconds: float, request_id: str) -> None:
    """Count a request under its route's template (the router's `path_template`), so ids in
    paths do not make new series."""
    route = template or UNMATCHED_ROUTE
    key = (route, status)
    counter = _requests.get(key)
    if counter is None:
        counter = _requests[key] = CounterTally(REQUESTS.labels(route, str(status)))
    counter.inc()
    duration = _durations.get(route)
    if duration is None:
        duration = _durations[route] = HistogramTally(REQUEST_SECONDS.labels(route))
    duration.observe(seconds)
    EXEMPLARS.record(route, seconds, request_id)
    _in_flight.dec()


def turn_saved(model: str, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
    """`model` is a label from a bounded set (`app.turns.labels`): each makes its series."""
    counters = _models.get(model)
    if counters is None:
        counters = _models[model] = _ModelCounters(model)
    counters.turns.inc()
    counters.prompt_tokens.inc(prompt_tokens)
    counters.completion_tokens.inc(completion_tokens)
    if cost:
        counters.cost.inc(cost)


def upstream_failed(status: int | str) -> None:
    """`status` is a label from a bounded set (`app.turns.labels`): one of ours, or `other`."""
    counter = _upstream_errors.get(status)
    if counter is None:
        counter = _upstream_errors[status] = UPSTREAM_ERRORS.labels(str(status))
    counter.inc()


def redis_failed() -> None:
    REDIS_ERRORS.inc()
