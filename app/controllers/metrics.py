"""GET /metrics: the replica's Prometheus metrics, added up over its processes."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.errors import Unauthorized
from app.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _check_token(request: Request[Any, Any, Any], token: str) -> None:
    """Constant-time comparison, so the token cannot be guessed byte by byte."""
    scheme, _sep, given = request.headers.get("authorization", "").partition(" ")
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    if scheme.lower() != "bearer" or not matches:
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


def exposition() -> bytes:
    """Every process's counters when they share a directory, else this process's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    forget_dead_processes(directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics(request: Request[Any, Any, Any], services: Services) -> Response[bytes]:
    """Prometheus text format; behind `METRICS_TOKEN` when it is set."""
    if services.settings.metrics_token:
        _check_token(request, services.settings.metrics_token)
    return Response(exposition(), media_type=CONTENT_TYPE)
