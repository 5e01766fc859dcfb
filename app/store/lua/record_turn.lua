-- The shard's part of a commit, or of a turn without a session, on a Redis Cluster
-- (commit_steps.lua), in the slot of the owner's shard. The shard remembers the turn ids it
-- recorded for SETTLED_MS, so a replay (redis-py retried after a lost reply) adds nothing.
-- KEYS: the all-sessions index, the owners index, the usage inbox, the recorded turn ids
-- ARGV: owner, session id ('' for none), now (ms), turn id, usage record JSON ('' for none)
-- Returns 1 when recorded, 0 for a replay.
if not is_whole(ARGV[3], 0, 1e15) then
  return redis.error_reply('ERR record_turn: now must be a whole number')
end
if ARGV[5] ~= '' and not pcall(cjson.decode, ARGV[5]) then
  return redis.error_reply('ERR record_turn: the usage record is not JSON')
end
local now = redis_now_ms()
if redis.call('ZADD', KEYS[4], 'NX', now, ARGV[4]) == 0 then
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - SETTLED_MS)
redis.call('PEXPIRE', KEYS[4], SETTLED_MS)
record_turn(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[5])
return 1
