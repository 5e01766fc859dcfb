"""The two processes of a deployment, `chat-backend web` and `chat-backend worker`.

The Procfile, the Docker image, compose and the dev stack all run these, so what the tests
start is what ships. Both stop gracefully on SIGTERM and then exit 0.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from app.ops.logs import configure_logging
from app.settings import SettingsError, require_session_secret

if TYPE_CHECKING:
    import socket
    from collections.abc import MutableMapping
    from types import FrameType

    import uvicorn

    from app.settings import Settings

logger = logging.getLogger("app")

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


def listening_sockets(config: uvicorn.Config, admin_port: int | None) -> list[socket.socket]:
    """The public port's socket, and ADMIN_PORT's when it is set, bound before any process of
    the replica starts: every process then accepts on both (app.http.listeners tells them
    apart). uvicorn.run binds one socket the same way, with the same log line and exit."""
    sockets = [config.bind_socket()]
    if admin_port is not None:
        admin = copy.copy(config)
        admin.port = admin_port
        sockets.append(admin.bind_socket())
        logger.info(
            "/admin/* and /metrics are served on ADMIN_PORT %d alone; PORT %d answers 404 for them",
            admin_port,
            config.port,
        )
    return sockets


def serve(config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    """What uvicorn.run does once its socket is bound: one server, or `workers` processes
    under uvicorn's supervisor (which restarts one that dies)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    if config.workers > 1:
        Multiprocess(config, sockets=sockets).run()
        return
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


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

    config = uvicorn.Config(
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
    # uvicorn's Config has just set up logging of its own: this process's lines (the sockets it
    # binds, the supervisor's) are written in the app's format, as its processes' lines are.
    configure_logging(settings.log_level, settings.effective_log_format)
    try:
        serve(config, listening_sockets(config, settings.admin_port))
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def run_worker() -> None:
    signal.signal(signal.SIGINT, _exit_cleanly)
    from arq.worker import run_worker as run_arq_worker

    from workers.settings import WorkerSettings

    run_arq_worker(WorkerSettings)  # type: ignore[arg-type]
