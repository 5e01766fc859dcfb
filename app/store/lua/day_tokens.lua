-- Shared by the scripts that commit a turn; loaded ahead of them (app.store.client.lua_script).
-- Add `tokens` to the owner's count of the UTC day in its limit hash, the hash admit_turn.lua
-- reads (same clock, same day), and return the day's total.
local function add_day_tokens(limit, tokens)
  local now_ms = redis_now_ms()
  local day = math.floor(now_ms / DAY_MS)
  if tonumber(redis.call('HGET', limit, 'day')) ~= day then
    redis.call('HSET', limit, 'day', day, 'tokens', 0)
  end
  local used = redis.call('HINCRBY', limit, 'tokens', tokens)
  local day_left = (day + 1) * DAY_MS - now_ms
  if redis.call('PTTL', limit) < day_left then
    redis.call('PEXPIRE', limit, day_left)
  end
  return used
end

