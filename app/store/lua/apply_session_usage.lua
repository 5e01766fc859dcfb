-- One pending usage event applied to its session's usage hash on a Redis Cluster
-- (usage_events.lua, drain_usage_shard.lua), in the session's slot, once: the hash keeps the
-- sequence number of the last event it counted (`applied_seq`). Workers apply the pending list
-- in its order and drop an event only once applied, so an event numbered at or below that
-- mark was counted already (a worker that crashed before dropping it, or a second worker).
-- KEYS: the session's meta, its usage hash
-- ARGV: the event's sequence number, the event as it was in the inbox
-- Returns 1 when applied, 0 when counted already or the session is gone.
local meta, usage, seq = KEYS[1], KEYS[2], tonumber(ARGV[1])
if not is_whole(ARGV[1], 1, 2 ^ 53) then
  return redis.error_reply('ERR apply_session_usage: a sequence number, please')
end
local ok, event = pcall(cjson.decode, ARGV[2])
if not ok or usage_problem(event) then
  return redis.error_reply('ERR apply_session_usage: not a usage event')
end
if seq <= (tonumber(redis.call('HGET', usage, 'applied_seq') or '0') or 0) then
  return 0
end
if not add_session_usage(meta, usage, event) then
  return 0
end
redis.call('HSET', usage, 'applied_seq', ARGV[1])
return 1
