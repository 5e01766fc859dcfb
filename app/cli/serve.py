"""The two processes of a deployment, `chat-backend web` and `chat-backend worker`.

The Procfile, the Docker image, compose and the dev stack all run these, so what the tests
start is what ships. Both stop gracefully on SIGTERM and then exit 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from app.settings import SettingsError, require_session_secret

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from types import FrameType

    from app.settings import Settings

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(given: str, environ: MutableMapping[str, str]) -> Path | None:
    """The directory where every process of this replica keeps its metrics.

    prometheus_client reads the variable when it is first imported, so it is set here, before
    uvicorn imports the app. A given directory is emptied (counts of a previous run would
    otherwise be added to this one's); without one, a fresh temporary directory is made and
    returned so that it can be removed at exit.
    """
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        environ[METRICS_DIR_VARIABLE] = given
        return None
    made = Path(tempfile.mkdtemp(prefix="chat-metrics-"))
    environ[METRICS_DIR_VARIABLE] = str(made)
    return made


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


def run_web(settings: Settings) -> None:
    try:
        # The API's settings are checked here, before any process of the replica starts.
        settings = require_session_secret(settings)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    made = prepare_metrics_dir(settings.prometheus_multiproc_dir, os.environ)
    # uvicorn re-raises SIGTERM after its graceful shutdown, which would end the process "by
    # signal" (exit 143); this handler turns that last signal into exit 0. It also stops a
    # process that is told to stop while it is still starting.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    import uvicorn

    try:
        uvicorn.run(
            "app.http.asgi:create_app",
            factory=True,
            host="0.0.0.0",  # noqa: S104 - every interface: a container, a platform's dyno
            port=settings.port,
            workers=settings.web_concurrency,
            # Client addresses from X-Forwarded-For, only when the peer is trusted.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips or None,
            access_log=False,
            timeout_graceful_shutdown=max(round(settings.shutdown_grace_seconds), 1),
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def run_worker() -> None:
    signal.signal(signal.SIGINT, _exit_cleanly)
    from arq.worker import run_worker as run_arq_worker

    from workers.settings import WorkerSettings

    run_arq_worker(WorkerSettings)  # type: ignore[arg-type]
