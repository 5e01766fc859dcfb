"""The drain: on SIGTERM, a replica first says it is going (`/health` answers 503) and keeps
serving for SHUTDOWN_DRAIN_SECONDS, so that a load balancer checking `/health` takes it out of
rotation before it stops accepting. Without it, a request the balancer sends on a pooled
connection just as the replica closes it fails.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

logger = logging.getLogger("app")


class Drain:
    """Whether this process is draining; `install` puts itself ahead of the server's SIGTERM
    handler (uvicorn's, which starts the graceful shutdown), called once the drain is over."""

    __slots__ = ("draining", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.draining = False

    def install(self) -> None:
        """In the event loop's thread, once the server's own handler is in place."""
        handler = signal.getsignal(signal.SIGTERM)
        if self.seconds <= 0 or not callable(handler):
            return
        stop: Callable[[int, FrameType | None], Any] = handler
        loop = asyncio.get_running_loop()

        def drain(signum: int, frame: FrameType | None) -> None:
            if self.draining:  # a second SIGTERM: stop now
                stop(signum, frame)
                return
            self.draining = True
            logger.info(
                "draining: /health answers 503 before the server stops",
                extra={"fields": {"seconds": self.seconds}},
            )
            # From the signal handler, woken in the loop: the server's own stop, later.
            loop.call_soon_threadsafe(loop.call_later, self.seconds, stop, signum, frame)

        signal.signal(signal.SIGTERM, drain)
