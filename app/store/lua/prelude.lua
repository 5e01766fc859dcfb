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

-- Extend a key's TTL to `ms` from now; never shorten it (other writers may need it longer).
local function keep_for(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
