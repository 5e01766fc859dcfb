"""GET /health: liveness and readiness in one."""

from __future__ import annotations

import time

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from redis.exceptions import RedisError

from app import __version__
from app.http.services import Services
from app.schemas import Health
from app.store import keys
from app.store.client import BoundedRedisCluster, StoreRedis
from app.store.heartbeat import worker_state


@get(
    "/health",
    summary="Is this replica ready?",
    tags=["health"],
    responses={
        503: ResponseSpec(
            data_container=Health,
            description=(
                "Redis is unreachable: this replica cannot serve; or it is stopping "
                "(`draining`, SHUTDOWN_DRAIN_SECONDS)."
            ),
            generate_examples=False,
        )
    },
)
async def health(services: NamedDependency[Services]) -> Response[Health]:
    """200 when Redis answers, 503 with the reason when it does not.

    `worker` reports the background worker's heartbeat; the API serves without it (usage
    metrics catch up when it returns), so it does not fail readiness. A replica told to stop
    answers 503 `draining` while it still serves, so that balancers take it out first.
    """
    draining = services.drain.draining
    try:
        beat = await ping_and_beat(services.redis)
    except RedisError as exc:
        return Response(
            Health(
                status="unavailable",
                redis=f"unreachable: {type(exc).__name__}",
                worker="unknown",
                version=__version__,
            ),
            status_code=503,
        )
    return Response(
        Health(
            status="draining" if draining else "ok",
            redis="ok",
            worker=worker_state(beat, time.time()),
            version=__version__,
        ),
        status_code=503 if draining else 200,
    )


async def ping_and_beat(redis: StoreRedis) -> bytes | None:
    """PING Redis (every master of a cluster) and read the worker's heartbeat."""
    if isinstance(redis, BoundedRedisCluster):
        await redis.ping(target_nodes=BoundedRedisCluster.PRIMARIES)
        beat: bytes | None = await redis.get(keys.WORKER_HEARTBEAT)
        return beat
    async with redis.pipeline(transaction=False) as pipe:
        pipe.ping()
        pipe.get(keys.WORKER_HEARTBEAT)
        _, beat = await pipe.execute()
    return beat
