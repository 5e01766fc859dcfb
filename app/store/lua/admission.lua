-- Shared by the scripts that admit a turn; loaded ahead of them (app.store.client.lua_script).
-- Admit one turn of an owner, or refuse it, and hold what it may spend, in the same step.
--
-- Turns per minute: GCRA, i.e. a bucket of `rate` turns refilled at `rate` per minute, kept as
-- one timestamp (`tat`, when the bucket will be full again). Tokens and cost per UTC day: the
-- day's settled counts (`day`, `tokens`, `cost` in micro-USD) and what the turns in flight hold
-- (`held_tokens`, `held_cost`). A turn is admitted while settled + held is under each limit,
-- and then holds its worst case (prompt estimate + max_tokens, at the model's prices) until
-- settle.lua replaces it with what the turn spent: turns running at once go past a limit by
-- at most one turn's hold. The clock is Redis's, so every replica sees the same time.
--
-- The holds of an owner are a sorted set (chat:limit:{<owner>}:holds) of turn ids: scored by
-- when the hold lapses (a replica that died mid-turn never settles), or, once settled, by
-- minus when the mark lapses. Either way a replayed admission or settle finds its turn id
-- there and changes nothing. The amounts are fields `h:<turn id>` = "<tokens> <cost>" of the
-- limit hash.
--
-- A refused turn changes nothing.

-- Drop the marks of settled turns that have lapsed, and give back the holds of turns that
-- never settled (at most a few per call: each admission sweeps).
local function release_lapsed(key, holds, now)
  redis.call('ZREMRANGEBYSCORE', holds, '(' .. -now, '(0')
  for _, turn_id in ipairs(redis.call('ZRANGEBYSCORE', holds, 0, now, 'LIMIT', 0, 8)) do
    give_back(key, turn_id)
    redis.call('ZREM', holds, turn_id)
  end
end

-- admit(key, holds, limits, want): key is the owner's limit hash (chat:limit:{<owner>}),
-- holds its sorted set of holds; limits = {rate, tokens, cost} (turns per minute, tokens and
-- micro-USD per UTC day; 0: no limit); want = {turn id, tokens, cost}, the turn's hold.
-- Returns {admitted (1 or 0), turns left, ms until the bucket is full, ms until a retry can
--          succeed (0 when admitted), tokens used or held today, ms until the UTC day ends,
--          micro-USD spent or held today, what refused the turn (0 none, 1 the turn rate,
--          2 the tokens, 3 the budget)}
local function admit(key, holds, limits, want)
  local WINDOW = 60000
  local rate, token_limit, cost_limit = limits[1], limits[2], limits[3]
  local turn_id, want_tokens, want_cost = want[1], want[2], want[3]

  local now = redis_now_ms()
  local day = math.floor(now / DAY_MS)
  local day_left = (day + 1) * DAY_MS - now
  release_lapsed(key, holds, now)
  local state = redis.call('HMGET', key, 'tat', 'day', 'tokens', 'cost', 'held_tokens', 'held_cost')
  local tat = math.max(tonumber(state[1]) or 0, now)
  local used, spent = 0, 0
  if tonumber(state[2]) == day then
    used, spent = tonumber(state[3]) or 0, tonumber(state[4]) or 0
  end
  used = used + (tonumber(state[5]) or 0)
  spent = spent + (tonumber(state[6]) or 0)

  local interval = rate > 0 and WINDOW / rate or 0
  -- 1 ms of tolerance absorbs the rounding of `tat` at epoch-ms magnitude, which a burst of
  -- turns whose interval is no whole number (60000 / 7 ms) would otherwise add up.
  local TOLERANCE = 1
  local function left(at)
    if rate == 0 then return 0 end
    return math.min(rate, math.floor((WINDOW + TOLERANCE - (at - now)) / interval))
  end

  -- A replay (the client retried after a timeout): admitted already, nothing changes.
  if redis.call('ZSCORE', holds, turn_id) then
    return {1, left(tat), math.ceil(tat - now), 0, used, day_left, spent, 0}
  end
  if token_limit > 0 and used >= token_limit then
    return {0, left(tat), math.ceil(tat - now), day_left, used, day_left, spent, 2}
  end
  if cost_limit > 0 and spent >= cost_limit then
    return {0, left(tat), math.ceil(tat - now), day_left, used, day_left, spent, 3}
  end
  local reset = 0
  if rate > 0 then
    local next_tat = tat + interval
    if next_tat - now > WINDOW + TOLERANCE then
      return {0, 0, math.ceil(tat - now), math.ceil(next_tat - WINDOW - now), used, day_left,
              spent, 1}
    end
    redis.call('HSET', key, 'tat', string.format('%.17g', next_tat))
    tat = next_tat
    reset = math.ceil(next_tat - now)
  end

  local hold_tokens = token_limit > 0 and want_tokens or 0
  local hold_cost = cost_limit > 0 and want_cost or 0
  redis.call('ZADD', holds, now + HOLD_MS, turn_id)
  if hold_tokens > 0 or hold_cost > 0 then
    redis.call('HSET', key, 'h:' .. turn_id, hold_tokens .. ' ' .. hold_cost)
    redis.call('HINCRBY', key, 'held_tokens', hold_tokens)
    redis.call('HINCRBY', key, 'held_cost', hold_cost)
  end
  if hold_tokens > 0 or hold_cost > 0 then
    keep_for(key, HOLD_MS)
  end
  keep_for(key, reset)
  keep_for(holds, HOLD_MS)
  return {1, left(tat), reset, 0, used + hold_tokens, day_left, spent + hold_cost, 0}
end

-- The hold of a turn, from what it sends: the prompt at PROMPT_BYTES_PER_TOKEN (fewer bytes
-- a token than most text has, so the estimate errs high) and all of max_tokens, at the
-- model's prices (micro-USD a token; `request` a call).
local function turn_hold(prompt_bytes, max_tokens, prices)
  local prompt = math.ceil(prompt_bytes / PROMPT_BYTES_PER_TOKEN)
  return prompt + max_tokens, math.ceil(prompt * prices[1] + max_tokens * prices[2] + prices[3])
end

-- What refused a turn beyond its limits (the 8th field of admit's reply): its key, which
-- OpenRouter refused a short while ago, or its client address, which failed to authenticate
-- too often.
local KEY_REFUSED, ADDRESS_REFUSED = 4, 5
-- The reply of an admission with no limit to count: admitted, nothing used or held.
local UNCOUNTED = {1, 0, 0, 0, 0, 0, 0, 0}

-- Whether any of admit()'s limits is set.
local function limited(limits)
  return limits[1] > 0 or limits[2] > 0 or limits[3] > 0
end

-- The checks of who calls, ahead of admit(), both for a caller's own key (which any bearer
-- looks like until OpenRouter has seen it), both before its turn reaches OpenRouter:
-- * failure_limit > 0: a client address with that many failed authentications in its window
--   (failures: chat:authfail:{<address>}, auth_failures.lua) is refused until the window
--   ends; the refusal's retry is the ms left;
-- * check_refused: a key OpenRouter refused a short while ago (refused: chat:refused:{<owner>},
--   noted by the API) is refused again, and that is one more failure of the address.
-- Returns a refusal in admit()'s shape, or nil.
local function guard(refused, failures, check_refused, failure_limit)
  if failure_limit > 0 and (tonumber(redis.call('GET', failures)) or 0) >= failure_limit then
    return {0, 0, 0, failure_window_left(failures), 0, 0, 0, ADDRESS_REFUSED}
  end
  if check_refused and redis.call('EXISTS', refused) == 1 then
    if failure_limit > 0 then
      count_failure(failures)
    end
    return {0, 0, 0, 0, 0, 0, 0, KEY_REFUSED}
  end
  return nil
end
