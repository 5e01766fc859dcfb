"""Two listeners, one app: with ADMIN_PORT set, the operators' routes answer there alone.

Every process of a replica accepts on PORT and on ADMIN_PORT (app/cli/serve.py). Which one a
request came in on is the local port of its connection (`scope["server"]`), which no header can
change. The check is a guard, so it runs on the route Litestar matched rather than on the
path as sent: no other spelling of a path gets past it. A route on the wrong listener answers
404, as a route that does not exist does, so the public port gives away nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.exceptions import NotFoundException

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler
    from litestar.types import Guard

# Route templates (and their prefixes) of the admin listener; the rest are the public one's.
OPERATOR_ROUTES = ("/admin", "/metrics")
# On both: platforms and load balancers check the public port, operators the admin one.
BOTH_LISTENERS = ("/health",)


def is_operator_route(template: str) -> bool:
    return any(template == route or template.startswith(f"{route}/") for route in OPERATOR_ROUTES)


def listener_guard(admin_port: int) -> Guard:
    """A guard that serves each route on its own listener and answers 404 on the other."""

    def on_its_listener(
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        template: str = connection.scope.get("path_template", "")
        if template in BOTH_LISTENERS:
            return
        server = connection.scope.get("server")
        on_admin_port = server is not None and server[1] == admin_port
        if is_operator_route(template) != on_admin_port:
            raise NotFoundException()

    return on_its_listener
