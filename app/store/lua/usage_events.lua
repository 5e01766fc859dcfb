-- Shared by the scripts that drain usage events; loaded ahead of them
-- (app.store.client.lua_script). On a standalone Redis drain_usage.lua applies a batch whole in
-- one script; on a Redis Cluster drain_usage_shard.lua applies the day's metrics in the shard's
-- slot and queues the events of sessions, which apply_session_usage.lua then applies, each in
-- its session's slot.

-- cjson reads a JSON null as cjson.null: absent, for every optional field.
local function given(value)
  if value == cjson.null then
    return nil
  end
  return value
end

local function is_count(value)
  value = given(value)
  return value == nil or (type(value) == 'number' and value >= 0 and value <= MAX_TOKENS_PER_CALL
    and value == math.floor(value))
end

-- NaN fails every comparison, infinity the bound.
local function is_amount(value, bound)
  value = given(value)
  return value == nil or (type(value) == 'number' and value >= 0 and value <= bound)
end

-- Why an event cannot be applied, or nil when it can.
local function usage_problem(event)
  if type(event) ~= 'table' then
    return 'not a JSON object'
  end
  if type(event.model) ~= 'string' or event.model == '' then
    return 'model: not a string'
  end
  if type(event.day) ~= 'string' or not event.day:match('^%d%d%d%d%-%d%d%-%d%d$') then
    return 'day: not YYYY-MM-DD'
  end
  if type(event.at) ~= 'number' or event.at < 0 or event.at ~= math.floor(event.at) then
    return 'at: not a time in ms'
  end
  for _, name in ipairs({'prompt_tokens', 'completion_tokens', 'total_tokens'}) do
    if not is_count(event[name]) then
      return name .. ': not a count of tokens'
    end
  end
  if not is_amount(event.cost, MAX_COST_PER_CALL) then
    return 'cost: not an amount'
  end
  if not is_amount(event.latency_ms, DAY_MS) then
    return 'latency_ms: not a duration'
  end
  -- A status that is not ours comes labelled `other` (app.turns.labels).
  local status = given(event.status)
  if status ~= nil and status ~= 'other' and (type(status) ~= 'number' or status < 100
      or status > 599 or status ~= math.floor(status)) then
    return 'status: not an HTTP status'
  end
  local session_id = given(event.session_id)
  if session_id ~= nil and type(session_id) ~= 'string' then
    return 'session_id: not a string'
  end
  return nil
end

-- The event's usage added to its session's usage hash, with the session's TTL. Returns false
-- when the session is gone (deleted or expired since the turn: nothing to attach it to).
local function add_session_usage(meta, usage, event)
  local ttl = redis.call('PTTL', meta)
  if ttl <= 0 then
    return false
  end
  redis.call('HINCRBY', usage, 'turns', 1)
  redis.call('HINCRBY', usage, 'prompt_tokens', given(event.prompt_tokens) or 0)
  redis.call('HINCRBY', usage, 'completion_tokens', given(event.completion_tokens) or 0)
  redis.call('HINCRBY', usage, 'total_tokens', given(event.total_tokens) or 0)
  redis.call('HINCRBYFLOAT', usage, 'cost', given(event.cost) or 0)
  redis.call('HINCRBYFLOAT', usage, 'latency_ms_total', given(event.latency_ms) or 0)
  redis.call('HINCRBY', usage, 'model:' .. event.model, 1)
  redis.call('HSET', usage, 'last_latency_ms', given(event.latency_ms) or 0,
    'last_activity', event.at)
  redis.call('HSETNX', usage, 'first_activity', event.at)
  redis.call('PEXPIRE', usage, ttl)
  return true
end

-- The event added to its day's metrics (`day_key`), kept `retention` ms after the day ends.
local function add_daily_metrics(day_key, event, retention)
  local field = event.model .. '|'
  local status = given(event.status) or 200
  redis.call('HINCRBY', day_key, field .. 'requests', 1)
  -- A failed call may still have used tokens (a stream cut mid-answer): they count too.
  redis.call('HINCRBY', day_key, field .. 'prompt_tokens', given(event.prompt_tokens) or 0)
  redis.call('HINCRBY', day_key, field .. 'completion_tokens', given(event.completion_tokens) or 0)
  redis.call('HINCRBY', day_key, field .. 'total_tokens', given(event.total_tokens) or 0)
  redis.call('HINCRBYFLOAT', day_key, field .. 'cost', given(event.cost) or 0)
  if status ~= 200 then
    redis.call('HINCRBY', day_key, field .. 'errors', 1)
    redis.call('HINCRBY', day_key, field .. 'errors:' .. status, 1)
  end
  -- Kept `retention` after the end of its day.
  redis.call('PEXPIREAT', day_key, event.at - (event.at % DAY_MS) + DAY_MS + retention)
end

-- Take up to `batch` events from the inbox: `apply(event, raw)` each valid one, set the others
-- aside whole, with their reason, in the dead-letter list (capped at `dead_cap`; its count is
-- the list's name and ':count'), and drop the batch from the inbox.
-- Returns {events applied, events set aside}.
local function drain_batch(inbox, dead, batch, dead_cap, apply)
  local raw_events = redis.call('LRANGE', inbox, 0, batch - 1)
  local applied, set_aside = 0, 0
  for _, raw in ipairs(raw_events) do
    local ok, event = pcall(cjson.decode, raw)
    local reason = 'not JSON'
    if ok then
      reason = usage_problem(event)
    end
    if reason then
      local entry = {reason = reason, event = raw, at = redis_now_ms()}
      redis.call('RPUSH', dead, cjson.encode(entry))
      set_aside = set_aside + 1
    else
      apply(event, raw)
      applied = applied + 1
    end
  end
  if #raw_events > 0 then
    redis.call('LTRIM', inbox, #raw_events, -1)
  end
  if set_aside > 0 then
    redis.call('LTRIM', dead, -dead_cap, -1)
    redis.call('INCRBY', dead .. ':count', set_aside)
  end
  return {applied, set_aside}
end
