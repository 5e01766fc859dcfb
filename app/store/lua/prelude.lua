-- Loaded ahead of every script (app.store.client.lua_script): what the scripts share.
local DAY_MS = 86400000

-- Redis's clock in ms: every replica and worker reads the same time.
local function redis_now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
