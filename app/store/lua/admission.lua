-- Shared by the scripts that admit a turn; loaded ahead of them (app.store.client.lua_script).
-- Admit one turn of an owner, or refuse it, counting it in the same step.
-- Turns per minute: GCRA, i.e. a bucket of `rate` turns refilled at `rate` per minute, kept as
-- one timestamp (`tat`, when the bucket will be full again). Tokens per day: the UTC day's
-- count (`day`, `tokens`), added to by commit_turn.lua. The clock is Redis's, so every replica
-- sees the same time. A refused turn changes nothing.
-- admit(key, rate, token_limit): key is the owner's limit hash (chat:limit:{<owner>}), rate
-- the turns per minute and token_limit the tokens per UTC day (0: no limit).
-- Returns {admitted (1 or 0), turns left, ms until the bucket is full, ms until a retry can
--          succeed (0 when admitted), tokens used today, ms until the UTC day ends}
local function admit(key, rate, token_limit)
  local WINDOW = 60000

  local now = redis_now_ms()
  local day = math.floor(now / DAY_MS)
  local day_left = (day + 1) * DAY_MS - now
  local state = redis.call('HMGET', key, 'tat', 'day', 'tokens')
  local tat = math.max(tonumber(state[1]) or 0, now)
  local used = 0
  if tonumber(state[2]) == day then
    used = tonumber(state[3]) or 0
  end

  local interval = rate > 0 and WINDOW / rate or 0
  -- 1 ms of tolerance absorbs the rounding of `tat` at epoch-ms magnitude, which a burst of
  -- turns whose interval is no whole number (60000 / 7 ms) would otherwise add up.
  local TOLERANCE = 1
  local function left(at)
    if rate == 0 then return 0 end
    return math.min(rate, math.floor((WINDOW + TOLERANCE - (at - now)) / interval))
  end

  if token_limit > 0 and used >= token_limit then
    return {0, left(tat), math.ceil(tat - now), day_left, used, day_left}
  end
  if rate == 0 then
    return {1, 0, 0, 0, used, day_left}
  end
  local next_tat = tat + interval
  if next_tat - now > WINDOW + TOLERANCE then
    return {0, 0, math.ceil(tat - now), math.ceil(next_tat - WINDOW - now), used, day_left}
  end
  redis.call('HSET', key, 'tat', string.format('%.17g', next_tat))
  -- Only ever extended: the same hash holds the day's token count.
  local ttl = math.ceil(next_tat - now)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
  return {1, left(next_tat), ttl, 0, used, day_left}
end
