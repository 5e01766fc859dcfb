"""`POST /api/v1/chat/completions`: auth, validation, the scripted step, then JSON or SSE."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from tests.standin import wire
from tests.standin.completion import fallback_model, parse_chat_request, plan_completion
from tests.standin.exchange import merge_headers
from tests.standin.script import DEFAULT_STEP
from tests.standin.state import ChatRecord, Generation
from tests.standin.stream import StreamSender

if TYPE_CHECKING:
    from tests.standin.catalogue import Catalogue
    from tests.standin.completion import ChatRequest
    from tests.standin.exchange import Exchange, Headers
    from tests.standin.script import Reply, Step
    from tests.standin.state import StandinState

_decoder = msgspec.json.Decoder()
# An endless body sends a byte this often: quicker than any read timeout.
ENDLESS_BYTE_SECONDS = 0.2


def bearer_key(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_error(authorization: str | None) -> str | None:
    """The 401 message OpenRouter sends for this Authorization header, if any."""
    key = bearer_key(authorization)
    if key is None:
        return "No cookie auth credentials found"
    if not key.startswith("sk-or-") or "revoked" in key:
        return "User not found."
    return None


def step_headers(reply: Reply) -> Headers:
    return [(name, str(value)) for name, value in (reply.headers or {}).items()]


async def send_reply_override(ex: Exchange, reply: Reply) -> bool:
    """Apply the delay/hang/raw/error parts of a reply; True when the exchange is over."""
    if await ex.sleep(reply.delay):
        return True
    if reply.hang:
        await ex.disconnected.wait()
        return True
    if reply.drop:
        await ex.drop()
        return True
    headers = step_headers(reply)
    if reply.raw_body is not None:
        body = reply.raw_body.encode()
        await ex.respond(reply.status or 200, body, reply.content_type, headers)
        return True
    if reply.status is not None:
        body = wire.error_body(reply.status, reply.message, reply.metadata)
        await ex.respond(reply.status, body, headers=headers)
        return True
    return False


async def handle_chat(ex: Exchange, state: StandinState, catalogue: Catalogue) -> None:
    raw = await ex.read_body()
    ex.watch_disconnect()
    created = int(time.time())
    try:
        body: Any = _decoder.decode(raw)
    except msgspec.DecodeError:
        body = None
    authorization = ex.headers.get("authorization")
    record = ChatRecord(
        key=bearer_key(authorization),
        headers=ex.headers,
        body=body,
        generation_id=wire.new_generation_id(created),
        stream=isinstance(body, dict) and body.get("stream") is True,
        received_at=time.time(),
    )
    state.add_record(record)
    try:
        await _answer(ex, state, catalogue, record, created)
    finally:
        if ex.disconnected.is_set() and not record.completed:
            record.cancelled = True


async def _answer(
    ex: Exchange, state: StandinState, catalogue: Catalogue, record: ChatRecord, created: int
) -> None:
    message = auth_error(ex.headers.get("authorization"))
    if message is not None:
        await ex.respond(401, wire.error_body(401, message, user_id=False))
        record.completed = True
        return
    request = parse_chat_request(record.body, catalogue)
    if isinstance(request, str):
        await ex.respond(400, wire.error_body(400, request))
        record.completed = True
        return
    step = state.pop_step(record.key) or DEFAULT_STEP
    if await send_reply_override(ex, step):
        record.completed = not ex.disconnected.is_set()
        return
    served = fallback_model(request) if step.fallback else request.model
    if served is None:
        # Nothing to fall back to: the primary's failure is what the client gets.
        body = wire.error_body(503, step.message, step.metadata)
        await ex.respond(503, body, headers=step_headers(step))
    elif step.body_error is not None:
        body = wire.encode({"error": step.body_error, "user_id": wire.USER_ID})
        await ex.respond(200, body, headers=step_headers(step))
    else:
        await _complete(ex, state, catalogue, record, request, step, served, created)
        return
    record.completed = True


async def _complete(
    ex: Exchange,
    state: StandinState,
    catalogue: Catalogue,
    record: ChatRecord,
    request: ChatRequest,
    step: Step,
    served: str,
    created: int,
) -> None:
    completion = plan_completion(
        request,
        step,
        catalogue,
        served=served,
        generation_id=record.generation_id,
        created=created,
    )
    generation = Generation(
        record=record, model=completion.model, tokens_prompt=completion.prompt_tokens
    )
    state.generations[record.generation_id] = generation
    extra = step_headers(step)
    if request.stream:
        await StreamSender(ex, record, generation, completion, step).run(extra)
        return
    usage = completion.usage()
    finish_reason = "error" if step.choice_error is not None else completion.finish_reason
    body = wire.completion(
        generation_id=completion.generation_id,
        provider=completion.provider,
        model=completion.model,
        created=created,
        content=completion.text,
        finish_reason=finish_reason,
        usage_body=step.usage if step.usage is not None else usage,
        error=step.choice_error,
        tool_calls=step.tool_calls,
        reasoning_details=step.reasoning_details,
    )
    generation.tokens_completion = usage["completion_tokens"]
    generation.total_cost = usage["cost"]
    generation.finish_reason = finish_reason
    headers = [("x-generation-id", record.generation_id), *extra]
    if step.cut_after is not None or step.endless:
        await _broken_body(ex, body, headers, step)
        return
    await ex.respond(200, body, headers=headers)
    record.completed = True


async def _broken_body(ex: Exchange, body: bytes, headers: Headers, step: Step) -> None:
    """A 200 whose body is cut off, or never ends (blank space after it, as long as it takes)."""
    if step.cut_after is not None:
        base = [("content-type", "application/json"), ("content-length", str(len(body)))]
        await ex.start(200, merge_headers(base, headers))
        await ex.write(body[: step.cut_after])
        await ex.cut()
    await ex.start(200, merge_headers([("content-type", "application/json")], headers))
    await ex.write(body)
    while not await ex.sleep(ENDLESS_BYTE_SECONDS):
        await ex.write(b" ")
