-- Delete the given sessions if they are still idle since `cutoff` (prune_steps.lua). Index
-- entries of sessions Redis already expired are dropped. Key names are derived from the refs
-- (one Redis, not a cluster: there prune_session.lua and unindex_idle.lua do it).
-- KEYS: all-sessions index
-- ARGV: key prefix, cutoff (ms), session refs (`<owner>:<session id>`)...
-- Returns {sessions deleted, index entries of expired sessions dropped}
local index, prefix, cutoff = KEYS[1], ARGV[1], tonumber(ARGV[2])
local deleted, orphans = 0, 0
for i = 3, #ARGV do
  local ref = ARGV[i]
  local tag = prefix .. ':{' .. ref .. '}'
  -- The owner's index names the session by its id; a ref of an older layout was the id.
  local session_id = string.match(ref, '^%x+:(.+)$') or ref
  local pruned, owner = prune_session(
    tag .. ':meta', tag .. ':messages', tag .. ':turns', tag .. ':usage', cutoff)
  if pruned == 'expired' then
    -- Only the index entry (and perhaps a straggling key) was left.
    redis.call('ZREM', index, ref)
    orphans = orphans + 1
  elseif pruned == 'deleted' then
    redis.call('ZREM', index, ref)
    redis.call('ZREM', prefix .. ':owner:' .. owner .. ':sessions', session_id)
    deleted = deleted + 1
  end
end
return {deleted, orphans}
