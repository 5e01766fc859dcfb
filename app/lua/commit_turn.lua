-- Commit one turn atomically: both messages, the trim, the TTLs, the indexes, the usage record.
-- KEYS: meta, messages, turns, usage, all-sessions index, owner index, usage inbox, owners,
--       the owner's limit hash
-- ARGV: session id, owner, turn id, now (ms), ttl (ms), history cap, user message JSON,
--       assistant message JSON, model, title, system prompt ('' keeps the stored one),
--       usage record JSON ('' for none), tokens counted against the owner's day ('' for none)
-- Returns {1, message count, tokens used today} when committed, {2, message count, -1} when
-- this turn id was already committed (a retried call), {0, 0, -1} when another owner holds
-- the session. Tokens used today is -1 when they are not counted.
local meta, messages, turns, usage, all_index, owner_index, inbox, owners, limit =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local session_id, owner, turn_id, now, ttl, cap =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])

local current = redis.call('HGET', meta, 'owner')
if current and current ~= owner then
  return {0, 0, -1}
end
if redis.call('LPOS', turns, turn_id) then
  return {2, redis.call('LLEN', messages), -1}
end

if not current then
  redis.call('HSET', meta, 'owner', owner, 'created', now, 'title', ARGV[10])
end
redis.call('RPUSH', messages, ARGV[7], ARGV[8])
redis.call('LTRIM', messages, -cap, -1)
local count = redis.call('LLEN', messages)
redis.call('HINCRBY', meta, 'turns', 1)
redis.call('HSET', meta, 'updated', now, 'model', ARGV[9], 'message_count', count)
if ARGV[11] ~= '' then
  redis.call('HSET', meta, 'system_prompt', ARGV[11])
end
redis.call('LPUSH', turns, turn_id)
redis.call('LTRIM', turns, 0, 15)

for _, key in ipairs({meta, messages, turns, usage, owner_index}) do
  redis.call('PEXPIRE', key, ttl)
end
redis.call('ZADD', all_index, now, session_id)
redis.call('ZADD', owner_index, now, session_id)
redis.call('ZADD', owners, now, owner)
if ARGV[12] ~= '' then
  redis.call('RPUSH', inbox, ARGV[12])
end

-- The day's tokens, in the hash admit_turn.lua reads (same clock, same UTC day).
local used = -1
if ARGV[13] ~= '' then
  local DAY = 86400000
  local clock = redis.call('TIME')
  local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local day = math.floor(now_ms / DAY)
  if tonumber(redis.call('HGET', limit, 'day')) ~= day then
    redis.call('HSET', limit, 'day', day, 'tokens', 0)
  end
  used = redis.call('HINCRBY', limit, 'tokens', tonumber(ARGV[13]))
  local day_left = (day + 1) * DAY - now_ms
  if redis.call('PTTL', limit) < day_left then
    redis.call('PEXPIRE', limit, day_left)
  end
end
return {1, count, used}
