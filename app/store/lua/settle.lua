-- Shared by the scripts that end a turn; loaded ahead of them (app.store.client.lua_script).
-- Settle one turn against its owner's limits: give back what admission.lua held for it, and
-- add what it spent to the UTC day's counts of the owner's limit hash (same clock, same day).
-- A turn settles once: it is then marked settled in the holds (for SETTLED_MS), and a replay
-- of the settle changes nothing.
-- settle(key, holds, turn_id, tokens, cost): cost in micro-USD; 0 for what the owner has no
-- limit on.
-- Returns {tokens used or held today, micro-USD spent or held today} ({0, 0} for an owner
-- without a token limit or a budget), or nil for a replay.
local function settle(key, holds, turn_id, tokens, cost)
  local now = redis_now_ms()
  local mark = tonumber(redis.call('ZSCORE', holds, turn_id))
  if mark and mark < 0 then
    return nil
  end
  local held = give_back(key, turn_id)
  redis.call('ZADD', holds, -(now + SETTLED_MS), turn_id)
  keep_for(holds, SETTLED_MS)

  -- An owner limited in turns only holds and spends nothing here: no day's counts to keep.
  if not held and tokens == 0 and cost == 0 then
    return {0, 0}
  end
  local day = math.floor(now / DAY_MS)
  local state = redis.call('HMGET', key, 'day', 'tokens', 'cost', 'held_tokens', 'held_cost')
  local used, spent = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if tonumber(state[1]) ~= day then
    used, spent = 0, 0
    redis.call('HSET', key, 'day', day, 'tokens', 0, 'cost', 0)
  end
  if tokens > 0 or cost > 0 then
    used = redis.call('HINCRBY', key, 'tokens', tokens)
    spent = redis.call('HINCRBY', key, 'cost', cost)
    keep_for(key, (day + 1) * DAY_MS - now)
  end
  return {used + (tonumber(state[4]) or 0), spent + (tonumber(state[5]) or 0)}
end

-- Whether settle()'s arguments are counts it can add: checked before a script's first write.
local function settle_args_ok(tokens, cost)
  return is_whole(tokens, 0, MAX_TOKENS_PER_CALL) and is_whole(cost, 0, MAX_COST_PER_CALL * 1e6)
end
