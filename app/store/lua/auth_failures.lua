-- Shared by the scripts that count failed authentications; loaded ahead of them
-- (app.store.client.lua_script).
-- A client address's failed authentications are counted in a window of a minute from the
-- first (chat:authfail:{<address>}, a string with that TTL).
local FAILURE_WINDOW_MS = 60000

-- One more failed authentication of the address; returns the count in the window.
local function count_failure(key)
  local count = redis.call('INCR', key)
  -- The first of a window, or a counter that lost its TTL: it must never outlive the window.
  if count == 1 or redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, FAILURE_WINDOW_MS)
  end
  return count
end

-- ms until the address's window ends, at least 1.
local function failure_window_left(key)
  return math.max(redis.call('PTTL', key), 1)
end
