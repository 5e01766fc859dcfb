"""Serves the stand-in with uvicorn on a background daemon thread, on a free local port."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Self

import uvicorn

from tests.standin.app import create_standin_app
from tests.standin.control import StandinControl

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

_START_TIMEOUT = 10.0


class StandinServer:
    def __init__(
        self,
        models_path: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_records: int | None = None,
    ) -> None:
        self.app = create_standin_app(models_path, max_records=max_records)
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._control: StandinControl | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the stand-in is not running")
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the backend should use as its OpenRouter base URL."""
        return f"{self.root_url}/api/v1"

    @property
    def control(self) -> StandinControl:
        if self._control is None:
            self._control = StandinControl(self.root_url)
        return self._control

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the stand-in is already running")
        # Binding here, not inside uvicorn, makes the port known before the thread starts and
        # avoids the race of picking a free port and binding it later.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._requested_port))
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            ws="none",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="standin", daemon=True
        )
        self._server, self._thread = server, thread
        self._port = sock.getsockname()[1]
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the stand-in failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=_START_TIMEOUT)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
