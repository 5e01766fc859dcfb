-- Delete one session if it is still idle since `cutoff`, on a Redis Cluster (prune_steps.lua),
-- in the session's slot; the worker then drops its index entries with unindex_idle.lua.
-- KEYS: meta, messages, turns, usage
-- ARGV: cutoff (ms)
-- Returns 1 when deleted, 2 when Redis had expired it, 0 when it is active.
if not is_whole(ARGV[1], 0, 1e15) then
  return redis.error_reply('ERR prune_session: the cutoff must be a whole number')
end
local pruned = prune_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[1]))
if pruned == 'deleted' then
  return 1
end
return pruned == 'expired' and 2 or 0
