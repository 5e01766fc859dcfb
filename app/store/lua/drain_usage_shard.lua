-- The shard's part of the usage drain on a Redis Cluster (usage_events.lua), in the shard's
-- slot: a batch of the inbox checked and set aside as drain_usage.lua does, the day's metrics
-- applied, and the events that name a session moved to the shard's pending list, each behind
-- a sequence number (`<seq> <event>`), all in one step. apply_session_usage.lua then applies
-- them in their sessions' slots, in order, and drop_pending.lua drops them.
-- The numbers only grow: from the last one given (the pending list's name and ':seq'), and
-- never below Redis's clock in µs, so even a lost counter cannot give an old number again.
-- KEYS: usage inbox, dead-letter list, pending list, its last sequence number
-- ARGV: batch size, key prefix, metrics retention (ms), dead-letter cap, the shard's suffix
-- Returns {events applied, events set aside}
local inbox, dead, pending, last = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local batch, prefix, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local dead_cap, suffix = tonumber(ARGV[4]), ARGV[5]

local seq = math.max(tonumber(redis.call('GET', last) or '0') or 0, redis_now_ms() * 1000)
local queued = false

local function apply(event, raw)
  add_daily_metrics(prefix .. ':metrics:' .. event.day .. suffix, event, retention)
  local session = given(event.session_id)
  -- A ref that is empty or opens with '}' gives keys without a hash tag, in different slots;
  -- no session is named so (a ref is `<owner>:<id>`), so drain_usage.lua finds none either.
  if session ~= nil and session ~= '' and session:sub(1, 1) ~= '}' then
    seq = seq + 1
    redis.call('RPUSH', pending, string.format('%.0f', seq) .. ' ' .. raw)
    queued = true
  end
end

local result = drain_batch(inbox, dead, batch, dead_cap, apply)
if queued then
  redis.call('SET', last, string.format('%.0f', seq))
end
return result
