"""The caller's sessions: list, read, delete."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from app.http.context import request_log
from app.http.routes import responses as docs
from app.http.services import Services
from app.schemas import SESSION_ID_PATTERN, SessionDetail, SessionPage
from app.turns.callers import Caller

SessionIdPath = Annotated[
    str, Parameter(pattern=SESSION_ID_PATTERN, description="The session id.", max_length=64)
]
Limit = Annotated[int, Parameter(ge=1, le=100, description="Sessions per page.")]
# Far beyond any listing, and offset + limit stays well inside Redis's 64-bit range arguments.
MAX_OFFSET = 1_000_000_000
# schema_extra: Litestar leaves a falsy bound (0) out of the OpenAPI document.
Offset = Annotated[
    int,
    Parameter(ge=0, le=MAX_OFFSET, description="Sessions to skip.", schema_extra={"minimum": 0}),
]


class SessionController(Controller):
    path = "/sessions"
    tags = ["sessions"]  # noqa: RUF012
    security = docs.SECURITY

    @get("/", summary="List your sessions", responses=docs.COMMON)
    async def list_sessions(
        self,
        caller: NamedDependency[Caller],
        services: NamedDependency[Services],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> SessionPage:
        """The sessions of the calling key, most recent activity first."""
        return await services.store.page(caller.owner, limit=limit, offset=offset)

    @get(
        "/{session_id:str}",
        summary="Read a session",
        responses={**docs.COMMON, 404: docs.NOT_FOUND},
    )
    async def get_session(
        self,
        request: Request[Any, Any, Any],
        session_id: SessionIdPath,
        caller: NamedDependency[Caller],
        services: NamedDependency[Services],
    ) -> SessionDetail:
        """Metadata, usage, expiry and every stored message, oldest first."""
        request_log(request.scope).session_id = session_id
        return await services.store.get(session_id, caller.owner)

    @delete(
        "/{session_id:str}",
        summary="Delete a session",
        status_code=204,
        responses={**docs.COMMON, 404: docs.NOT_FOUND},
    )
    async def delete_session(
        self,
        request: Request[Any, Any, Any],
        session_id: SessionIdPath,
        caller: NamedDependency[Caller],
        services: NamedDependency[Services],
    ) -> None:
        """Remove the session and every key it owns."""
        request_log(request.scope).session_id = session_id
        await services.store.delete(session_id, caller.owner)
