"""The floor: a turn with nothing but the work itself.

Raw ASGI, one aiohttp session, redis-py on hiredis, msgspec; two Redis round trips (the
history, then a script that commits both messages, trims and renews the TTL); no validation,
no logging, no metrics.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import redis.asyncio as redis

if TYPE_CHECKING:
    from collections.abc import Callable

UPSTREAM = os.environ["OPENROUTER_BASE_URL"] + "/chat/completions"
HISTORY = 10
TTL_MS = 86_400_000
COMMIT = """
redis.call('RPUSH', KEYS[1], ARGV[2], ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class Message(msgspec.Struct):
    role: str
    content: str


class Turn(msgspec.Struct):
    message: str
    session_id: str
    model: str = "openai/gpt-4o"


class Choice(msgspec.Struct):
    message: Message


class Answer(msgspec.Struct):
    choices: list[Choice]
    model: str


encode = msgspec.json.Encoder().encode
decode_turn = msgspec.json.Decoder(Turn).decode
decode_message = msgspec.json.Decoder(Message).decode
decode_answer = msgspec.json.Decoder(Answer).decode
HEADERS = [(b"content-type", b"application/json")]


class State:
    http: aiohttp.ClientSession
    redis: redis.Redis
    commit: Any


state = State()


async def lifespan(receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    await receive()
    state.http = aiohttp.ClientSession()
    state.redis = redis.Redis.from_url(os.environ["REDIS_URL"])
    state.commit = state.redis.register_script(COMMIT)
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await state.http.close()
    await state.redis.aclose()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    auth = next(value for name, value in scope["headers"] if name == b"authorization")
    turn = decode_turn(body)
    key = f"floor:{turn.session_id}"
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.lrange(key, -HISTORY, -1)
        (stored,) = await pipe.execute()
    user = Message("user", turn.message)
    messages = [*map(decode_message, stored), user]
    payload = encode({"model": turn.model, "messages": messages})
    async with state.http.post(
        UPSTREAM,
        data=payload,
        headers={"Authorization": auth.decode(), "Content-Type": "application/json"},
    ) as reply:
        answer = decode_answer(await reply.read())
    said = answer.choices[0].message
    await state.commit(keys=[key], args=[HISTORY, encode(user), encode(said), TTL_MS])
    out = encode(
        {"response": said.content, "model_used": answer.model, "session_id": turn.session_id}
    )
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": out})
