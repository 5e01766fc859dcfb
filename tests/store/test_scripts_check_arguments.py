"""The scripts that write check every argument before their first write: a bad one fails the
script with nothing written, never half a turn (real Redis, the scripts as the API loads them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis as redis_lib

from app.store import keys
from app.store.client import lua_script
from app.store.sessions import commit_turn_script

SHARD = keys.STANDALONE.shards[0]  # a standalone Redis's only shard

if TYPE_CHECKING:
    import redis

GOOD = {"ttl": "60000", "cap": "50", "tokens": "12", "cost": "3", "usage": '{"model": "m"}'}
MESSAGES = ['{"role": "user", "content": "hi"}', '{"role": "assistant", "content": "hello"}']


def commit(client: redis.Redis, session_id: str, **args: str) -> object:
    given = {**GOOD, **args}
    session = keys.session_keys(keys.session_ref("owner", session_id))
    return client.eval(
        commit_turn_script(),
        10,
        session.meta,
        session.messages,
        session.turns,
        session.usage,
        SHARD.all_sessions,
        keys.STANDALONE.owner_sessions("owner"),
        SHARD.usage_inbox,
        SHARD.owners,
        keys.owner_limit("owner"),
        keys.owner_holds("owner"),
        session_id, "owner", "turn-1", "1764720000000", given["ttl"], given["cap"], "m", "t",
        "", given["usage"], given["tokens"], given["cost"], *MESSAGES,
    )  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"tokens": str(2**70)},
        {"tokens": "-1"},
        {"tokens": "1.5"},
        {"tokens": "many"},
        {"cost": str(2**70)},
        {"cost": "-3"},
        {"cost": "0.5"},
        {"ttl": "soon"},
        {"cap": "0"},
        {"usage": "{not json"},
    ],
)
def test_a_commit_with_a_bad_argument_writes_nothing(
    redis_client: redis.Redis, bad: dict[str, str]
) -> None:
    with pytest.raises(redis_lib.ResponseError, match="commit_turn"):
        commit(redis_client, "bad-args", **bad)
    assert redis_client.keys("*") == []
    # The same commit with good arguments writes the turn whole.
    assert commit(redis_client, "bad-args") == [1, 2, 12, 3]
    assert redis_client.llen(keys.session_keys("owner:bad-args").messages) == 2


def test_a_pass_through_with_a_bad_count_writes_nothing(redis_client: redis.Redis) -> None:
    script = lua_script("pass_through.lua", after=("settle.lua",))
    inbox, limit, holds = (
        SHARD.usage_inbox,
        keys.owner_limit("owner"),
        keys.owner_holds("owner"),
    )
    for tokens, cost in [(str(2**64), "0"), ("7", str(2**64)), ("7", "-1")]:
        with pytest.raises(redis_lib.ResponseError, match="pass_through"):
            redis_client.eval(script, 3, inbox, limit, holds, '{"model": "m"}', "t", tokens, cost)
        assert redis_client.keys("*") == []
    used: object = redis_client.eval(
        script, 3, inbox, limit, holds, '{"model": "m"}', "t", "7", "2"
    )
    assert used == [7, 2]
