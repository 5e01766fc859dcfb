"""/admin: every session and the global metrics, for operators holding ADMIN_TOKEN.

The routes exist only when ADMIN_TOKEN is set. They read the same keys an operator reads with
redis-cli (see the README's Redis section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from app.errors import Unauthorized
from app.http.routes import responses as docs
from app.http.routes.sessions import Limit, Offset, SessionIdPath
from app.http.services import Services
from app.schemas import AdminSessionDetail, AdminSessionPage, Stats
from app.store.admin_stats import read_stats
from app.turns.callers import bearer_matches

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

ADMIN = {
    400: docs.INVALID,
    401: docs.error("Missing or wrong admin token."),
    503: docs.STORAGE,
}

Days = Annotated[int, Parameter(ge=1, le=366, description="How many days, today first.")]
OwnerPath = Annotated[
    str,
    Parameter(
        pattern="^[0-9a-f]{32}$",
        description="The session's owner id, as the listing shows it.",
        min_length=32,
        max_length=32,
    ),
]


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    token: str = connection.app.state.services.settings.admin_token
    if not bearer_matches(connection.headers.get("authorization"), token):
        raise Unauthorized("admin routes need `Authorization: Bearer <ADMIN_TOKEN>`")


class AdminController(Controller):
    path = "/admin"
    tags = ["admin"]  # noqa: RUF012
    guards = [admin_guard]  # noqa: RUF012
    security = [{"AdminToken": []}]  # noqa: RUF012

    @get("/sessions", summary="List every session", responses=ADMIN)
    async def list_sessions(
        self, services: NamedDependency[Services], limit: Limit = 20, offset: Offset = 0
    ) -> AdminSessionPage:
        """All sessions by last activity, most recent first, with their owner ids."""
        return await services.store.page_all(limit=limit, offset=offset)

    @get(
        "/sessions/{owner:str}/{session_id:str}",
        summary="Read any session",
        responses={**ADMIN, 404: docs.NOT_FOUND},
    )
    async def get_session(
        self, owner: OwnerPath, session_id: SessionIdPath, services: NamedDependency[Services]
    ) -> AdminSessionDetail:
        """The whole session of any owner (session ids are scoped to their owner)."""
        return await services.store.get_any(owner, session_id)

    @delete(
        "/sessions/{owner:str}/{session_id:str}",
        summary="Delete any session",
        status_code=204,
        responses={**ADMIN, 404: docs.NOT_FOUND},
    )
    async def delete_session(
        self, owner: OwnerPath, session_id: SessionIdPath, services: NamedDependency[Services]
    ) -> None:
        """Remove the session, every key it owns and its index entries."""
        await services.store.delete(session_id, owner)

    @get("/stats", summary="Global usage metrics", responses=ADMIN)
    async def stats(self, services: NamedDependency[Services], days: Days = 7) -> Stats:
        """Calls, errors by status, tokens and cost per UTC day and model (kept for
        `METRICS_RETENTION_DAYS`), the session count, the usage backlog and the worker's state."""
        return await read_stats(services.redis, days=days)
