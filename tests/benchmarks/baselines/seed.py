"""The seed's design: FastAPI and pydantic, one shared httpx client, sessions in a dict."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI, Header
from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

UPSTREAM = os.environ["OPENROUTER_BASE_URL"] + "/chat/completions"
HISTORY = 10


class ChatRequest(BaseModel):
    message: str
    session_id: str
    model: str = "openai/gpt-4o"


class ChatResponse(BaseModel):
    response: str
    model_used: str
    session_id: str
    tokens_used: int
    timestamp: datetime


class Client:
    http: httpx.AsyncClient


client = Client()
sessions: dict[str, list[dict[str, Any]]] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client.http = httpx.AsyncClient(timeout=30)
    yield
    await client.http.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/chat")
async def chat(request: ChatRequest, authorization: str = Header()) -> ChatResponse:
    history = sessions.setdefault(request.session_id, [])
    user = {"role": "user", "content": request.message}
    reply = await client.http.post(
        UPSTREAM,
        json={"model": request.model, "messages": [*history[-HISTORY:], user]},
        headers={"Authorization": authorization},
    )
    reply.raise_for_status()
    answer = reply.json()
    said = answer["choices"][0]["message"]
    history.extend([user, {"role": "assistant", "content": said["content"]}])
    del history[:-HISTORY]
    return ChatResponse(
        response=said["content"],
        model_used=answer["model"],
        session_id=request.session_id,
        tokens_used=answer["usage"]["total_tokens"],
        timestamp=datetime.now(UTC),
    )
