"""What a failed Redis call becomes: the 503 a client is told, a log line and a metric."""

from __future__ import annotations

import logging

from redis.exceptions import OutOfMemoryError, RedisError

from app.errors import StorageUnavailable
from app.ops import prometheus
from app.store.client import NotReplicated

logger = logging.getLogger("app.errors")


def storage_error(exc: RedisError) -> StorageUnavailable:
    """What a client is told, and the log and the metrics say, when a Redis call fails."""
    prometheus.redis_failed()
    if isinstance(exc, OutOfMemoryError):
        # maxmemory reached with noeviction: Redis refuses writes, whole scripts included.
        logger.error("redis is out of memory: writes are refused")
        return StorageUnavailable("session storage is full")
    if isinstance(exc, NotReplicated):
        logger.warning("a commit was not replicated in time: %s", exc)
        return StorageUnavailable(
            "the turn reached too few Redis replicas in time (REDIS_WAIT_REPLICAS): it may "
            "not have been saved"
        )
    logger.warning("redis unavailable: %s", type(exc).__name__)
    return StorageUnavailable()
