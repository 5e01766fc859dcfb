"""Deadlines of one watch per loop (`app.ops.deadlines`), against what `asyncio.timeout` does."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
import uvloop

from app.ops import deadlines
from app.ops.deadlines import TICK_SECONDS

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

SECONDS = 0.2


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Each test on both loops: the app serves on uvloop."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


def test_a_block_past_its_deadline_raises_timeout_error(
    run: Callable[[Coroutine[Any, Any, float]], float],
) -> None:
    async def overrun() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError), deadlines.within(SECONDS):
            await asyncio.sleep(10)
        return time.monotonic() - started

    took = run(overrun())
    assert SECONDS <= took < SECONDS + TICK_SECONDS + 0.15


def test_a_block_done_in_time_is_left_alone(
    run: Callable[[Coroutine[Any, Any, str]], str],
) -> None:
    async def in_time() -> str:
        with deadlines.within(SECONDS):
            await asyncio.sleep(0)
        await asyncio.sleep(SECONDS + 3 * TICK_SECONDS)  # past the deadline, not cancelled
        return "done"

    assert run(in_time()) == "done"


def test_a_deadline_by_loop_time(run: Callable[[Coroutine[Any, Any, float]], float]) -> None:
    async def overrun() -> float:
        loop = asyncio.get_running_loop()
        when = loop.time() + SECONDS
        with pytest.raises(TimeoutError), deadlines.at(when):
            await asyncio.sleep(10)
        return loop.time() - when

    assert 0 <= run(overrun()) < TICK_SECONDS + 0.15


def test_a_cancellation_from_elsewhere_stays_a_cancellation(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def cancelled() -> None:
        async def wait() -> None:
            with deadlines.within(10):
                await asyncio.sleep(10)

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cancelled())


def test_cancelled_as_it_expires_stays_a_cancellation(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def both() -> None:
        entered: list[deadlines.Deadline] = []

        async def wait() -> None:
            with deadlines.within(10) as deadline:
                entered.append(deadline)
                await asyncio.sleep(10)

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.01)
        entered[0].expire()  # what the watch does
        task.cancel()  # and its owner, before the task ran again
        with pytest.raises(asyncio.CancelledError):
            await task

    run(both())


def test_nested_deadlines_each_raise_their_own(
    run: Callable[[Coroutine[Any, Any, list[str]]], list[str]],
) -> None:
    async def nested() -> list[str]:
        seen = []
        try:
            with deadlines.within(SECONDS * 3):
                try:
                    with deadlines.within(SECONDS):
                        await asyncio.sleep(10)
                except TimeoutError:
                    seen.append("inner")
                await asyncio.sleep(10)
        except TimeoutError:
            seen.append("outer")
        return seen

    assert run(nested()) == ["inner", "outer"]


def test_many_deadlines_expire_each_on_its_own_time(
    run: Callable[[Coroutine[Any, Any, list[float]]], list[float]],
) -> None:
    async def many() -> list[float]:
        loop = asyncio.get_running_loop()

        async def overrun(seconds: float) -> float:
            when = loop.time() + seconds
            try:
                with deadlines.at(when):
                    await asyncio.sleep(10)
            except TimeoutError:
                return loop.time() - when
            raise AssertionError("not expired")

        async def in_time() -> float:
            with deadlines.within(SECONDS):
                await asyncio.sleep(0.01)
            return -1.0

        return await asyncio.gather(
            *(overrun(n * TICK_SECONDS) for n in range(1, 6)), *(in_time() for _ in range(5))
        )

    late = run(many())
    assert late[5:] == [-1.0] * 5
    assert all(0 <= seconds < TICK_SECONDS + 0.15 for seconds in late[:5]), late


def test_every_new_loop_has_a_watch_of_its_own(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    async def overrun() -> None:
        with pytest.raises(TimeoutError), deadlines.within(SECONDS):
            await asyncio.sleep(10)

    async def left_open() -> None:
        with deadlines.within(SECONDS):
            await asyncio.sleep(0)  # the loop ends with its watch still due

    run(left_open())
    run(overrun())
    run(overrun())
