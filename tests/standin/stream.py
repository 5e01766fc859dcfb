"""The SSE body of a streaming completion, including the scripted ways it can go wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.standin import wire
from tests.standin.exchange import merge_headers

if TYPE_CHECKING:
    from tests.standin.completion import Completion
    from tests.standin.exchange import Exchange, Headers
    from tests.standin.script import Step
    from tests.standin.state import ChatRecord, Generation

_EPSILON = 1e-9


class StreamSender:
    def __init__(
        self,
        ex: Exchange,
        record: ChatRecord,
        generation: Generation,
        completion: Completion,
        step: Step,
    ) -> None:
        self.ex = ex
        self.record = record
        self.generation = generation
        self.completion = completion
        self.step = step
        self.chunks = wire.ChunkWriter(
            generation_id=completion.generation_id,
            provider=completion.provider,
            model=completion.model,
            created=completion.created,
        )
        self.sent = 0

    async def run(self, extra_headers: Headers) -> None:
        ex, step, pieces = self.ex, self.step, self.completion.pieces
        base = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-generation-id", self.completion.generation_id),
        ]
        await ex.start(200, merge_headers(base, extra_headers))
        for index in range(step.keepalives):
            if await ex.sleep(step.keepalive_interval if index else 0):
                return self._cancelled()
            await ex.write(wire.KEEPALIVE)
        if await ex.sleep(step.first_token_delay):
            return self._cancelled()
        await ex.write(self.chunks.content(""))
        for detail in step.reasoning_details or []:
            for piece in self.chunks.reasoning_pieces(detail):
                await ex.write(piece)
        for emitted in range(len(pieces) + 1):
            if self._due(step.pause_after, emitted) and await self._pause():
                return self._cancelled()
            if self._due(step.drop_after, emitted):
                await ex.end()
                return self._ended(None)
            if self._due(step.cut_after, emitted):
                self._ended(None)
                await ex.cut()
            if self._due(self._error_after(), emitted):
                return await self._error()
            if emitted == len(pieces):
                break
            if await ex.sleep(step.chunk_delay):
                return self._cancelled()
            await ex.write(self.chunks.content(pieces[emitted]))
            self.sent += 1
        for index, call in enumerate(step.tool_calls or []):
            for fragment in self.chunks.tool_call_fragments(index, call):
                await ex.write(fragment)
        finish_reason = self.completion.finish_reason
        if not step.no_finish:
            await ex.write(self.chunks.finish(finish_reason))
        if step.usage_chunk != "none":
            usage = self._usage() if step.usage is None else step.usage
            await ex.write(self.chunks.usage(usage, empty_choices=step.usage_chunk == "empty"))
        await self._close(done=not step.no_done)
        self._ended(finish_reason)

    def _error_after(self) -> int | None:
        # A choice_error on a stream surfaces the way streams report errors: after the content.
        if self.step.error_after is None and self.step.choice_error is not None:
            return len(self.completion.pieces)
        return self.step.error_after

    def _due(self, after: int | None, sent: int) -> bool:
        # A count past the end of the reply applies once all content has gone out.
        return after is not None and sent == min(after, len(self.completion.pieces))

    async def _pause(self) -> bool:
        """Hold the stream mid-reply; True when the client left meanwhile."""
        total, interval = self.step.pause_seconds, self.step.keepalive_interval
        elapsed = 0.0
        while elapsed < total - _EPSILON:
            wait = min(interval, total - elapsed) if interval > 0 else total - elapsed
            if await self.ex.sleep(wait):
                return True
            elapsed += wait
            if elapsed < total - _EPSILON:
                await self.ex.write(wire.KEEPALIVE)
        return False

    async def _error(self) -> None:
        step = self.step
        documented = step.error_form == "documented"
        if step.choice_error is not None:
            error = step.choice_error
        else:
            error = wire.stream_error(
                step.error_code, step.error_message, step.metadata, typed=documented
            )
        if documented:
            event = self.chunks.documented_error(error)
        else:
            event = self.chunks.observed_error(error, self._usage())
        await self.ex.write(event)
        await self._close(done=not step.no_done)
        self._ended("error")

    async def _close(self, *, done: bool) -> None:
        # [DONE] is an event like any other, flushed on its own before the body is closed.
        if done:
            await self.ex.write(wire.DONE)
        await self.ex.end()

    def _usage(self) -> dict[str, Any]:
        return self.completion.usage(self.completion.pieces[: self.sent])

    def _account(self) -> None:
        usage = self._usage()
        self.generation.tokens_completion = usage["completion_tokens"]
        self.generation.total_cost = usage["cost"]

    def _ended(self, finish_reason: str | None) -> None:
        self._account()
        self.generation.finish_reason = finish_reason
        self.record.cancelled = self.ex.disconnected.is_set()
        self.record.completed = not self.record.cancelled

    def _cancelled(self) -> None:
        self._account()
        self.record.cancelled = True
