"""The steps of a commit that record what a turn spent, on a Redis Cluster: one script in the
owner's slot and one in the owner's shard's, run at once (`SessionStore` and `UsageInbox`)."""

from __future__ import annotations

import asyncio

from app.store import keys
from app.store.client import LuaScript, StoreRedis, layout_of

# The functions the commit scripts share (lua/commit_steps.lua), behind settle.lua's.
COMMIT_LUA = ("settle.lua", "commit_steps.lua")


async def record_spend(
    redis: StoreRedis,
    commit_owner: LuaScript,
    record_turn: LuaScript,
    *,
    owner: str,
    session_id: str,
    turn_id: str,
    now: int,
    ttl_ms: int,
    record: bytes,
    spent: tuple[int, int] | tuple[str, str],
) -> tuple[int, int]:
    """What a turn spent, on a Redis Cluster: settled in the owner's slot
    (`lua/commit_owner.lua`, with the session in the owner's index) and recorded in the
    shard's (`lua/record_turn.lua`: the usage record, the global indexes), both at once.
    Returns the owner's day (tokens, micro-USD), or (-1, -1) without limits."""
    layout = layout_of(redis)
    shard = layout.shard(owner)
    owner_part = commit_owner(
        keys=[layout.owner_sessions(owner), keys.owner_limit(owner), keys.owner_holds(owner)],
        args=[session_id, now, ttl_ms, turn_id, *spent],
    )
    shard_part = record_turn(
        keys=[shard.all_sessions, shard.owners, shard.usage_inbox, shard.recorded],
        args=[owner, session_id, now, turn_id, record],
    )
    day, _ = await asyncio.gather(owner_part, shard_part)
    return int(day[0]), int(day[1])
