-- Apply a batch of usage events from the inbox and drop them, in one atomic step: each event
-- counts exactly once, however many workers drain at the same time and however often a job is
-- retried. Session and metrics keys are derived from the events (one Redis, not a cluster).
-- KEYS: usage inbox
-- ARGV: batch size, key prefix, metrics retention (ms)
-- Returns {events applied, unreadable events dropped}
local inbox, batch, prefix, retention = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])

local raw_events = redis.call('LRANGE', inbox, 0, batch - 1)
local applied, dropped = 0, 0

local function add_session_usage(event)
  local tag = prefix .. ':{' .. event.session_id .. '}'
  local ttl = redis.call('PTTL', tag .. ':meta')
  if ttl <= 0 then
    return -- deleted or expired since the turn: nothing to attach the usage to
  end
  local usage = tag .. ':usage'
  redis.call('HINCRBY', usage, 'turns', 1)
  redis.call('HINCRBY', usage, 'prompt_tokens', event.prompt_tokens or 0)
  redis.call('HINCRBY', usage, 'completion_tokens', event.completion_tokens or 0)
  redis.call('HINCRBY', usage, 'total_tokens', event.total_tokens or 0)
  redis.call('HINCRBYFLOAT', usage, 'cost', event.cost or 0)
  redis.call('HINCRBYFLOAT', usage, 'latency_ms_total', event.latency_ms or 0)
  redis.call('HINCRBY', usage, 'model:' .. event.model, 1)
  redis.call('HSET', usage, 'last_latency_ms', event.latency_ms or 0, 'last_activity', event.at)
  redis.call('HSETNX', usage, 'first_activity', event.at)
  redis.call('PEXPIRE', usage, ttl)
end

for _, raw in ipairs(raw_events) do
  local ok, event = pcall(cjson.decode, raw)
  if ok and type(event) == 'table' and type(event.model) == 'string'
      and type(event.day) == 'string' and type(event.at) == 'number' then
    local day_key = prefix .. ':metrics:' .. event.day
    local field = event.model .. '|'
    local status = tonumber(event.status) or 200
    redis.call('HINCRBY', day_key, field .. 'requests', 1)
    -- A failed call may still have used tokens (a stream cut mid-answer): they count too.
    redis.call('HINCRBY', day_key, field .. 'prompt_tokens', event.prompt_tokens or 0)
    redis.call('HINCRBY', day_key, field .. 'completion_tokens', event.completion_tokens or 0)
    redis.call('HINCRBY', day_key, field .. 'total_tokens', event.total_tokens or 0)
    redis.call('HINCRBYFLOAT', day_key, field .. 'cost', event.cost or 0)
    if status ~= 200 then
      redis.call('HINCRBY', day_key, field .. 'errors', 1)
      redis.call('HINCRBY', day_key, field .. 'errors:' .. status, 1)
    end
    if type(event.session_id) == 'string' then
      add_session_usage(event)
    end
    -- Kept `retention` after the end of its day.
    redis.call('PEXPIREAT', day_key, event.at - (event.at % DAY_MS) + DAY_MS + retention)
    applied = applied + 1
  else
    dropped = dropped + 1
  end
end
if #raw_events > 0 then
  redis.call('LTRIM', inbox, #raw_events, -1)
end
return {applied, dropped}
