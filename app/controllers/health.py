"""GET /health: liveness and readiness in one."""

from __future__ import annotations

from litestar import Response, get
from redis.exceptions import RedisError

from app import __version__
from app.schemas import Health
from app.services import Services


@get("/health", summary="Is this replica ready?", tags=["health"], include_in_schema=True)
async def health(services: Services) -> Response[Health]:
    """200 when Redis answers; 503, with the reason, when it does not."""
    try:
        await services.redis.ping()
    except RedisError as exc:
        reason = f"unreachable: {type(exc).__name__}"
        return Response(
            Health(status="unavailable", redis=reason, version=__version__), status_code=503
        )
    return Response(Health(status="ok", redis="ok", version=__version__))
