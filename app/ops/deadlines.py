"""Deadlines kept by one watch per event loop, instead of a timer each.

`asyncio.timeout` starts a timer on entry and cancels it on exit: under uvloop a libuv timer
made, started, stopped and closed, 7 us a use here, and a turn has two (its body, its
upstream call). `within` keeps its deadline in a set instead. A watch that runs every
`TICK_SECONDS` while any deadline of its loop is open cancels the tasks past theirs, and
`within` then raises `TimeoutError` as `asyncio.timeout` does. A deadline fires up to
`TICK_SECONDS` late: the price of a watch that costs nothing per use.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

TICK_SECONDS = 0.05


class Deadline:
    """A `with` block that raises `TimeoutError` when it outlives `when` (loop time)."""

    __slots__ = ("_cancelling", "_expired", "_task", "_watch", "when")

    def __init__(self, watch: Watch, when: float) -> None:
        self._watch = watch
        self.when = when
        self._expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be entered inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._watch.open(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._watch.close(self)
        # As asyncio.timeout does: our own cancellation becomes TimeoutError; one that came
        # from elsewhere as well goes on as cancellation.
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def expire(self) -> None:
        if not self._expired:
            self._expired = True
            self._task.cancel()


class Watch:
    """The open deadlines of one event loop, and the watch that expires them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK_SECONDS) -> None:
        self.tick = tick
        self._loop = loop
        self._open: set[Deadline] = set()
        self._watching = False

    def within(self, seconds: float) -> Deadline:
        return Deadline(self, self._loop.time() + seconds)

    def at(self, when: float) -> Deadline:
        return Deadline(self, when)

    def open(self, deadline: Deadline) -> None:
        self._open.add(deadline)
        if not self._watching:
            self._watching = True
            self._loop.call_later(self.tick, self._expire_overdue)

    def close(self, deadline: Deadline) -> None:
        self._open.discard(deadline)

    def _expire_overdue(self) -> None:
        if not self._open:
            self._watching = False  # nothing open: the next deadline starts the watch again
            return
        now = self._loop.time()
        for deadline in [deadline for deadline in self._open if deadline.when <= now]:
            deadline.expire()
        self._loop.call_later(self.tick, self._expire_overdue)


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watch] = weakref.WeakKeyDictionary()


def watch() -> Watch:
    """The running loop's watch."""
    loop = asyncio.get_running_loop()
    found = _watches.get(loop)
    if found is None:
        found = _watches[loop] = Watch(loop)
    return found


def within(seconds: float) -> Deadline:
    """A `with` block that raises `TimeoutError` after `seconds` (and up to a tick more)."""
    return watch().within(seconds)


def at(when: float) -> Deadline:
    """A `with` block that raises `TimeoutError` after `when`, in the loop's time."""
    return watch().at(when)
