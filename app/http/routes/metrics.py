"""GET /metrics: the replica's Prometheus metrics, added up over its processes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from redis.exceptions import RedisError

from app.errors import Unauthorized
from app.http.services import Services
from app.ops import prometheus, tally
from app.ops.exemplars import WithExemplars
from app.store.admin_stats import usage_counts
from app.turns.callers import bearer_matches

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_exposition.CONTENT_TYPE_LATEST


def _check_token(request: Request[Any, Any, Any], token: str) -> None:
    if not bearer_matches(request.headers.get("authorization"), token):
        raise Unauthorized("/metrics needs `Authorization: Bearer <METRICS_TOKEN>`")


def forget_dead_processes(directory: str) -> None:
    """Drop the in-flight gauges of processes that died (uvicorn restarts a crashed worker
    process), so their last values stop counting; their counters stay, as they should."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            continue


def exposition(openmetrics: bool) -> tuple[bytes, str]:
    """Every process's counters when they share a directory, else this process's; in the
    OpenMetrics format, with the request latency's exemplars, when the scraper asks for it."""
    tally.flush()  # this process's counts are up to date; the others' at most a second late
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry: Collector = REGISTRY
    if directory:
        forget_dead_processes(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    if not openmetrics:
        return generate_latest(registry), CONTENT_TYPE
    with_exemplars = WithExemplars(registry, prometheus.REQUEST_SECONDS_NAME, prometheus.EXEMPLARS)
    body = openmetrics_exposition.generate_latest(with_exemplars)  # type: ignore[no-untyped-call]
    return body, OPENMETRICS_CONTENT_TYPE


@get("/metrics", include_in_schema=False)
async def metrics(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    """Prometheus text format, or OpenMetrics (with exemplars: request ids beside the latency
    buckets) when the Accept header asks for it; behind `METRICS_TOKEN` when it is set. The
    worker's counts are read from Redis; while it is away, the last ones read are kept."""
    if services.settings.metrics_token:
        _check_token(request, services.settings.metrics_token)
    with contextlib.suppress(RedisError):
        backlog, dead = await usage_counts(services.redis)
        prometheus.USAGE_BACKLOG.set(backlog)
        prometheus.USAGE_DEAD.set(dead)
    openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
    body, content_type = exposition(openmetrics)
    return Response(body, media_type=content_type)
