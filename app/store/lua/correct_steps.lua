-- Shared by the scripts that correct a cut turn's estimated spend; loaded ahead of them
-- (app.store.client.lua_script). On a standalone Redis correct_spend.lua claims the estimate
-- and corrects the owner's day in one script; on a Redis Cluster the worker claims it with a
-- ZREM in the shard's slot, then correct_owner_spend.lua corrects the day in the owner's.

-- Whether the day (days since the epoch), tokens and micro-USD of a correction are numbers.
local function correction_ok(day, tokens, micro_usd)
  return is_whole(day, 0, 1e9) and is_whole(tokens, -MAX_TOKENS_PER_CALL, MAX_TOKENS_PER_CALL)
    and is_whole(micro_usd, -MAX_COST_PER_CALL * 1e6, MAX_COST_PER_CALL * 1e6)
end

-- The day's counts are kept while the day lasts; a correction for a day gone by has no day.
local function correct_day(limit, day, tokens, micro_usd)
  if tonumber(redis.call('HGET', limit, 'day')) == tonumber(day) then
    for field, delta in pairs({tokens = tokens, cost = micro_usd}) do
      if redis.call('HINCRBY', limit, field, delta) < 0 then
        redis.call('HSET', limit, field, 0)
      end
    end
  end
end
