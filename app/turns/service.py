"""The turn: load history -> call upstream -> commit the turn -> report usage."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from app.clock import DAY_MS, now_ms
from app.errors import ClientDisconnected, InvalidRequest, UpstreamError
from app.ids import random_id
from app.ops import prometheus
from app.schemas import ChatRequest, ChatResponse, StoredMessage, Usage
from app.store import keys
from app.store.estimates import Estimate
from app.store.limits import TurnWant
from app.store.sessions import History, HistoryMessage, TurnCommit
from app.store.spend import FREE, MICROS, Prices, estimated_tokens, micros
from app.store.usage import Settlement, UsageEvent, UsageInbox, usage_event_encoder
from app.turns.labels import status_label
from app.turns.model_policy import ModelPolicy
from app.turns.openai_request import NEW_SESSION, StoredSizes, incoming_turn, text_of
from app.turns.payload import conversation, upstream_payload
from app.turns.pricing import fallback_models

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from app.schemas import CompletionRequest
    from app.settings import Settings
    from app.store.auth_failures import AuthFailures
    from app.store.limits import Admission, RateLimiter
    from app.store.sessions import SessionStore
    from app.turns.callers import Caller
    from app.turns.catalog import ModelCatalog
    from app.upstream.client import Completion, OpenRouterClient, UpstreamStream

logger = logging.getLogger("app.chat")
_json = msgspec.json.Encoder()

# Request fields that are ours, or that we set ourselves; every other field goes upstream as is.
OWN_FIELDS = frozenset(ChatRequest.__struct_fields__) | {"messages", "prompt", "stream_options"}
# `/chat` holds a conversation of text: it has no way to send a tool's result back, and a
# stored call that is never answered breaks the session for strict providers.
TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")
TOOLS_ON_V1 = (
    "/chat does not call tools: send them to POST /v1/chat/completions with "
    "`X-Session-Id`, which stores the calls and their results in the same session"
)
TITLE_CHARS = 80
NO_USAGE = Usage()
# The status a call the client walked away from is counted as (nginx's "client closed").
CLIENT_CLOSED = ClientDisconnected.status
EMPTY_HISTORY = History(system_prompt=None, messages=[])


def new_session_id() -> str:
    """128 random bits, URL-safe: unguessable, and within the session id pattern."""
    return secrets.token_urlsafe(16)


def title_of(message: str) -> str:
    words = " ".join(message.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def _for_caller(caller: Caller, error: UpstreamError) -> UpstreamError:
    """OpenRouter refusing the server's own key is not the app token's fault: a 502."""
    if not caller.uses_server_key or error.status != 401:
        return error
    logger.error("OpenRouter refused the server's key: check OPENROUTER_API_KEY")
    return UpstreamError(
        502,
        "upstream_unauthorized",
        "OpenRouter refused the server's key; the operator has to fix it",
        upstream_status=401,
    )


def first_user_text(messages: list[StoredMessage]) -> str:
    return next((text_of(m.content) for m in messages if m.role == "user"), "")


class PreparedTurn(msgspec.Struct, kw_only=True, frozen=True):
    """A validated turn, ready to be sent: everything but the answer."""

    # None: a pass-through turn, whose messages are not stored (its usage still counts).
    session_id: str | None
    turn_id: str  # one per turn: a commit retried or repeated for it applies once
    model: str
    system_prompt: str | None  # what the turn sets; None keeps the session's
    messages: list[StoredMessage]  # the new messages stored before the answer
    payload: bytes
    # The prices its spend is estimated at, when it has to be (a stream cut before its usage).
    prices: Prices = FREE


def chat_answer(turn: PreparedTurn, completion: Completion, saved: StoredMessage) -> ChatResponse:
    """`/chat`'s answer to a committed turn (its turns always have a session)."""
    return ChatResponse(
        response=completion.content,
        model_used=completion.model,
        session_id=turn.session_id or "",
        tokens_used=completion.usage.total_tokens,
        timestamp=saved.timestamp,
        usage=completion.usage,
        finish_reason=completion.finish_reason,
        generation_id=completion.generation_id,
    )


class ChatService:
    """Runs turns; knows nothing of HTTP.

    Every turn, whatever route it comes from, is admitted by the caller's rate limits here,
    as its session is read; the quota it leaves is on `caller.quota` for the response headers.
    """

    def __init__(
        self,
        store: SessionStore,
        upstream: OpenRouterClient,
        usage: UsageInbox,
        limiter: RateLimiter,
        auth_failures: AuthFailures,
        settings: Settings,
        catalog: ModelCatalog,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._usage = usage
        self._limiter = limiter
        self._auth_failures = auth_failures
        self._settings = settings
        self._catalog = catalog
        # The labels the metrics count a turn under (app.turns.labels).
        self._labels = catalog.labels
        self._policy = ModelPolicy(settings.allowed_models)
        self._sizes = StoredSizes(
            settings.max_message_chars,
            settings.max_stored_message_bytes,
            settings.max_system_prompt_chars,
        )
        # Writes that outlive their request (a stream cut by the server's shutdown), awaited
        # by `drain` before the clients close.
        self._late_writes: set[asyncio.Future[None]] = set()

    def write_later(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a write its request cannot wait for; `drain` waits for it at shutdown."""
        task = asyncio.ensure_future(write)
        self._late_writes.add(task)
        task.add_done_callback(self._late_writes.discard)

    async def drain(self, seconds: float) -> None:
        """Wait, at most `seconds`, for the writes still running."""
        if self._late_writes:
            await asyncio.wait(self._late_writes, timeout=seconds)

    def _model(self, requested: str | None) -> str:
        """The model a turn is sent to: the requested one or the default, past its alias."""
        model = requested or self._settings.openrouter_default_model
        return self._settings.model_aliases.get(model, model)

    def _check_limits(self, request: ChatRequest) -> None:
        limit = self._settings.max_message_chars
        if len(request.message) > limit:
            raise InvalidRequest(
                f"message: {len(request.message)} characters; at most {limit} are allowed",
                field="message",
            )
        prompt, prompt_limit = request.system_prompt, self._settings.max_system_prompt_chars
        if prompt is not None and len(prompt) > prompt_limit:
            raise InvalidRequest(
                f"system_prompt: {len(prompt)} characters; at most {prompt_limit} are allowed",
                field="system_prompt",
            )
        self._check_max_tokens(request.max_tokens, "max_tokens")

    def _check_max_tokens(self, value: int | None, field: str) -> None:
        if value is not None and value > self._settings.max_tokens_limit:
            raise InvalidRequest(
                f"{field}: at most {self._settings.max_tokens_limit} is allowed", field=field
            )

    async def _prices(self, caller: Caller, model: str, fields: dict[str, Any]) -> Prices:
        """Refuse a turn that could reach a model outside ALLOWED_MODELS; the prices it is
        held at under a budget: the highest of the models it may be sent to."""
        aliases = self._settings.model_aliases
        fallbacks = [aliases.get(name, name) for name in fallback_models(fields)]
        self._policy.check(model, fields, fallbacks)
        if not caller.limits.micro_usd_per_day:
            return FREE
        return (await self._catalog.price_book()).of([model, *fallbacks])

    async def _session(
        self, caller: Caller, session_id: str | None, want: TurnWant
    ) -> tuple[str, History]:
        """The turn's session and its history (None starts a new one), the caller's admission
        riding in the same round trip: 429 when the caller's limit is used up."""
        if session_id is None:
            # A fresh random id has no history: Redis is asked only for the admission.
            await self._admit(caller, want)
            return new_session_id(), EMPTY_HISTORY
        admission = self._admission(caller, want)
        return session_id, await self._store.load_history(session_id, caller.owner, admission)

    def _admission(self, caller: Caller, want: TurnWant) -> Admission | None:
        return self._limiter.admission(
            caller.owner,
            caller.address,
            caller.limits,
            caller.quota,
            want,
            own_key=not caller.uses_server_key,
        )

    async def _admit(self, caller: Caller, want: TurnWant) -> None:
        """The admission of a turn that reads no session."""
        admission = self._admission(caller, want)
        if admission is not None:
            await admission.run()

    async def prepare(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any], *, stream: bool
    ) -> PreparedTurn:
        """Validate, admit (429 when the caller's limit is used up), read the history and
        build the upstream request: one Redis round trip for the admission and the history."""
        self._check_limits(request)
        for name in TOOL_FIELDS:
            if name in extras:
                raise InvalidRequest(f"{name}: {TOOLS_ON_V1}", field=name)
        model = self._model(request.model)
        prices = await self._prices(caller, model, extras)
        want = TurnWant(
            random_id(),
            len(request.message.encode()) + len((request.system_prompt or "").encode()),
            request.max_tokens or self._settings.max_tokens_default,
            prices,
        )
        session_id, history = await self._session(caller, request.session_id, want)
        system_prompt = request.system_prompt or history.system_prompt
        user = StoredMessage(role="user", content=request.message, timestamp=datetime.now(UTC))
        payload = self._payload(request, extras, history, system_prompt, model, session_id, stream)
        return PreparedTurn(
            session_id=session_id,
            turn_id=want.turn_id,
            model=model,
            system_prompt=request.system_prompt,
            messages=[user],
            payload=payload,
            prices=prices,
        )

    async def prepare_completion(
        self,
        caller: Caller,
        request: CompletionRequest,
        raw: dict[str, Any],
        session: str | None,
    ) -> PreparedTurn:
        """An OpenAI request as a turn.

        Without `session`, a pass-through: the messages sent are the messages used, and
        nothing is stored but the usage (and the caller's tokens, under a token limit). With
        one (`NEW_SESSION` starts one), the system prompt and stored history go first and the
        request's new messages are stored with the answer.
        """
        self._check_max_tokens(request.max_tokens, "max_tokens")
        self._check_max_tokens(request.max_completion_tokens, "max_completion_tokens")
        model = self._model(request.model)
        prices = await self._prices(caller, model, raw)
        limits = caller.limits
        want = TurnWant(
            random_id(),
            # Only a token limit or a budget needs the prompt's size.
            len(_json.encode(request.messages))
            if limits.tokens_per_day or limits.micro_usd_per_day
            else 0,
            request.max_tokens
            or request.max_completion_tokens
            or self._settings.max_tokens_default,
            prices,
        )
        session_id: str | None = None
        system_prompt: str | None = None
        stored: list[StoredMessage] = []
        messages: list[Any] = request.messages
        if session is not None:
            incoming = incoming_turn(request.messages, self._sizes)
            session_id, history = await self._session(
                caller, None if session == NEW_SESSION else session, want
            )
            system_prompt, stored = incoming.system_prompt, incoming.stored
            messages = [
                *conversation(history, system_prompt or history.system_prompt),
                *incoming.upstream,
            ]
        else:
            await self._admit(caller, want)
        return PreparedTurn(
            session_id=session_id,
            turn_id=want.turn_id,
            model=model,
            system_prompt=system_prompt,
            messages=stored,
            prices=prices,
            payload=upstream_payload(
                raw,
                model=model,
                messages=messages,
                session_id=session_id,
                max_tokens_default=self._settings.max_tokens_default,
                aliases=self._settings.model_aliases,
            ),
        )

    def _payload(
        self,
        request: ChatRequest,
        extras: dict[str, Any],
        history: History,
        system_prompt: str | None,
        model: str,
        session_id: str,
        stream: bool,
    ) -> bytes:
        fields = {key: value for key, value in extras.items() if key not in OWN_FIELDS}
        if request.max_tokens is not None:
            fields["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            fields["temperature"] = request.temperature
        if stream:
            fields["stream"] = True
        messages = conversation(history, system_prompt)
        messages.append(HistoryMessage("user", request.message))
        return upstream_payload(
            fields,
            model=model,
            messages=messages,
            session_id=session_id,
            max_tokens_default=self._settings.max_tokens_default,
            aliases=self._settings.model_aliases,
        )

    async def complete(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any]
    ) -> ChatResponse:
        """One non-streaming turn: at most two Redis round trips on the way."""
        turn = await self.prepare(caller, request, extras, stream=False)
        completion, saved = await self.run(caller, turn)
        return chat_answer(turn, completion, saved)

    async def run(self, caller: Caller, turn: PreparedTurn) -> tuple[Completion, StoredMessage]:
        """A prepared turn, non-streaming: the upstream call, then the commit."""
        try:
            completion = await self._upstream.complete(
                caller.key.value, turn.payload, requested_model=turn.model
            )
        except UpstreamError as exc:
            await self._upstream_failed(caller, turn, exc)
            raise _for_caller(caller, exc) from None
        except BaseException:
            # Cancelled (the client left) or broken: the hold goes back now, not when it lapses.
            self.write_later(self.record_failure(caller, turn, CLIENT_CLOSED))
            raise
        prometheus.UPSTREAM_COMPLETE.observe(completion.latency_ms / 1000)
        return completion, await self.commit(caller, turn, completion)

    async def open_stream(
        self, caller: Caller, request: ChatRequest, extras: dict[str, Any]
    ) -> tuple[PreparedTurn, UpstreamStream]:
        """A streaming turn up to upstream's first byte; errors until then are plain errors."""
        turn = await self.prepare(caller, request, extras, stream=True)
        return turn, await self.stream(caller, turn)

    async def stream(self, caller: Caller, turn: PreparedTurn) -> UpstreamStream:
        """A prepared turn, streaming, up to upstream's first byte."""
        try:
            upstream = await self._upstream.open_stream(caller.key.value, turn.payload)
        except UpstreamError as exc:
            await self._upstream_failed(caller, turn, exc)
            raise _for_caller(caller, exc) from None
        except BaseException:
            self.write_later(self.record_failure(caller, turn, CLIENT_CLOSED))
            raise
        prometheus.UPSTREAM_STREAM_OPEN.observe(time.perf_counter() - upstream.started)
        return upstream

    async def _upstream_failed(
        self, caller: Caller, turn: PreparedTurn, error: UpstreamError
    ) -> None:
        """A call that failed before its answer began; a 401 to a caller's own key is
        remembered, so the key's next turns are refused without asking OpenRouter, and counts
        as a failed authentication of the caller's address."""
        if error.status == 401 and not caller.uses_server_key:
            await self._auth_failures.key_refused(caller.owner, caller.address)
        await self.record_failure(caller, turn, error.upstream_status or error.status)

    @staticmethod
    def _settlement(caller: Caller, turn: PreparedTurn, usage: Usage) -> Settlement:
        """What the turn spent, as the caller's limits count it."""
        limits = caller.limits
        cost = usage.cost
        spent = (
            micros(cost)
            if cost is not None
            else turn.prices.cost(usage.prompt_tokens, usage.completion_tokens)
        )
        return Settlement(
            caller.owner,
            turn.turn_id,
            usage.total_tokens if limits.tokens_per_day else 0,
            spent if limits.micro_usd_per_day else 0,
        )

    @staticmethod
    def estimate(turn: PreparedTurn, text: str) -> Usage:
        """The usage of a stream cut before OpenRouter sent it: the prompt sent and the text
        relayed, at the estimate's bytes a token; priced when the turn has prices."""
        prompt = estimated_tokens(len(turn.payload))
        answer = estimated_tokens(len(text.encode()))
        cost = turn.prices.cost(prompt, answer) / MICROS if turn.prices != FREE else None
        return Usage(
            prompt_tokens=prompt, completion_tokens=answer, total_tokens=prompt + answer, cost=cost
        )

    async def record_failure(
        self,
        caller: Caller,
        turn: PreparedTurn,
        status: int,
        usage: Usage = NO_USAGE,
        *,
        estimated_for: str | None = None,
    ) -> None:
        """A call that saved no turn: counted in the metrics (under bounded labels), and what
        it spent (`usage`) settled against the caller's limits, giving the rest of its hold
        back.

        `estimated_for`: the generation whose `usage` is an estimate (a stream cut before
        any text).
        """
        label = status_label(status)
        prometheus.upstream_failed(label)
        settlement = self._settlement(caller, turn, usage)
        # Counted under the labels of the model the turn named and of the status.
        await self._usage.failed(self._labels.model(turn.model), label, settlement)
        if estimated_for is not None:
            await self._correct_later(caller, settlement, estimated_for)

    async def _correct_later(
        self, caller: Caller, settlement: Settlement, generation_id: str | None
    ) -> None:
        """In server-key mode, an estimate settled against the owner's day is corrected by the
        worker with OpenRouter's record of the generation (a caller's own key is kept
        nowhere, so the worker could not ask for it)."""
        if not caller.uses_server_key or generation_id is None:
            return
        if not (settlement.tokens or settlement.micro_usd):
            return  # the owner has no token limit or budget: nothing to correct
        await self._usage.correct_later(
            Estimate(
                generation_id=generation_id,
                owner=caller.owner,
                day=now_ms() // DAY_MS,
                tokens=settlement.tokens,
                micro_usd=settlement.micro_usd,
            )
        )

    async def commit(
        self,
        caller: Caller,
        turn: PreparedTurn,
        completion: Completion,
        *,
        interrupted: bool = False,
        error: str | None = None,
        status: int = 200,
    ) -> StoredMessage:
        """Save the turn's messages and the answer, and hand the usage to the worker, in one
        atomic write; a pass-through turn only hands over the usage. Returns the answer as
        saved.

        `interrupted` and `error` mark a partial answer of a stream; `status` is the failure
        the worker's metrics count it as. A partial answer without OpenRouter's usage is
        charged an estimate (`estimate`), marked `estimated` in its usage record. The usage is
        counted under the label of the model that answered: OpenRouter names it, yet a name the
        catalogue lacks is `other` too, so what an upstream answers cannot grow the metrics
        either.
        """
        estimated = (interrupted or error is not None) and not completion.usage.total_tokens
        if estimated:
            completion = msgspec.structs.replace(
                completion, usage=self.estimate(turn, completion.content)
            )
        model = self._labels.model(completion.model)
        status_counted = status_label(status)
        assistant = StoredMessage(
            role="assistant",
            # An answer that only calls tools has no text: null, as OpenAI's API has it.
            content=completion.content or (None if completion.tool_calls else ""),
            timestamp=datetime.now(UTC),
            tool_calls=completion.tool_calls,
            reasoning_details=completion.reasoning_details,
            model=completion.model,
            tokens=completion.usage.total_tokens,
            finish_reason=completion.finish_reason,
            generation_id=completion.generation_id,
            interrupted=interrupted,
            error=error,
        )
        usage = completion.usage
        event = UsageEvent.at_time(
            assistant.timestamp,
            status=status_counted,
            model=model,
            # The session as Redis names it, for the worker to find its usage hash.
            session_id=None
            if turn.session_id is None
            else keys.session_ref(caller.owner, turn.session_id),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost=usage.cost or 0.0,
            latency_ms=completion.latency_ms,
            estimated=estimated,
        )
        settlement = self._settlement(caller, turn, usage)
        if turn.session_id is None:
            day = await self._usage.passed_through(event, settlement)
        else:
            committed = await self._store.commit_turn(
                TurnCommit(
                    session_id=turn.session_id,
                    owner=caller.owner,
                    turn_id=turn.turn_id,
                    messages=turn.messages,
                    assistant=assistant,
                    title=title_of(first_user_text(turn.messages)),
                    system_prompt=turn.system_prompt,
                    usage_record=usage_event_encoder.encode(event),
                    spent=(settlement.tokens, settlement.micro_usd)
                    if caller.limits.active
                    else None,
                )
            )
            day = committed.day
        if estimated:
            await self._correct_later(caller, settlement, completion.generation_id)
        if status != 200:
            prometheus.upstream_failed(status_counted)
        prometheus.turn_saved(
            model, usage.prompt_tokens, usage.completion_tokens, usage.cost or 0.0
        )
        quota = caller.quota.quota
        if quota is not None and day is not None:
            quota.tokens_used, quota.spent = day
        return assistant
