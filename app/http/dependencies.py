"""Providers for Litestar's dependency injection: handlers declare what they use by name.

Two providers, chained (`caller` needs `services`): Litestar resolves providers of the same
depth concurrently in an anyio task group, a cost on every request that one chain avoids.
Litestar reads these functions' annotations at runtime, so their types are imported for real.
"""

from __future__ import annotations

from typing import Any, cast

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from app.errors import Unauthorized
from app.http.context import request_log
from app.http.services import Services
from app.turns.callers import Caller, client_address


def provide_services(state: State) -> Services:
    return cast("Services", state.services)


async def authenticate(
    services: Services, authorizations: list[str], client: tuple[str, int] | None
) -> Caller:
    """The caller that a request's Authorization headers name (the turn routes ask too), from
    the ASGI scope's `client`. A failure counts against the client's address, and past
    AUTH_FAILURES_PER_MINUTE it is answered 429 in place of 401."""
    address = client_address(client[0] if client else None)
    try:
        # A singleton field: two would name two callers, and proxies disagree on which counts.
        if len(authorizations) > 1:
            raise Unauthorized("more than one Authorization header: send one `Bearer <key>`")
        return services.auth.caller(authorizations[0] if authorizations else None, address)
    except Unauthorized:
        too_many = await services.auth_failures.failed(address)
        if too_many is None:
            raise
        raise too_many from None


async def provide_caller(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Caller:
    authorizations = request.headers.getall("authorization", [])
    caller = await authenticate(services, authorizations, request.scope["client"])
    # The request's log line names the app token, and its headers carry the caller's quota.
    request_log(request.scope).caller = caller
    return caller


dependencies = {
    "services": Provide(provide_services, sync_to_thread=False),
    "caller": Provide(provide_caller),
}
