-- Loaded ahead of every script (app.store.client.lua_script), after the constants it gives
-- them from Python (DAY_MS, MAX_TOKENS_PER_CALL, MAX_COST_PER_CALL): what the scripts share.

-- Redis's clock in ms: every replica and worker reads the same time.
local function redis_now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

-- Whether an argument is a whole number within [low, high]: scripts check every argument
-- before their first write, so a bad one fails the script with nothing written.
local function is_whole(value, low, high)
  local number = tonumber(value)
  return number ~= nil and number >= low and number <= high and number == math.floor(number)
end

-- Give back what a turn holds in its owner's limit hash (admission.lua's `h:<turn id>`, added
-- to `held_tokens` and `held_cost`); returns the hold, or false when it held nothing.
local function give_back(key, turn_id)
  local held = redis.call('HGET', key, 'h:' .. turn_id)
  if held then
    local tokens, cost = string.match(held, '^(%d+) (%d+)$')
    -- 0 - x, not -x: Lua writes -0 for a hold of 0, and HINCRBY takes no "-0".
    redis.call('HINCRBY', key, 'held_tokens', 0 - tonumber(tokens))
    redis.call('HINCRBY', key, 'held_cost', 0 - tonumber(cost))
    redis.call('HDEL', key, 'h:' .. turn_id)
  end
  return held
end

-- Extend a key's TTL to `ms` from now; never shorten it (other writers may need it longer).
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
