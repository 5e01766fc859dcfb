-- Delete the given sessions if they are still idle since `cutoff`: a session that received a
-- turn after it was picked is left alone. Index entries of sessions Redis already expired are
-- dropped. Key names are derived from the refs (one Redis, not a cluster).
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
  local fields = redis.call('HMGET', tag .. ':meta', 'owner', 'updated')
  local owner, updated = fields[1], tonumber(fields[2])
  if not owner then
    -- Expired by TTL: only the index entry (and perhaps a straggling key) is left.
    redis.call('DEL', tag .. ':messages', tag .. ':turns', tag .. ':usage')
    redis.call('ZREM', index, ref)
    orphans = orphans + 1
  elseif updated and updated <= cutoff then
    redis.call('DEL', tag .. ':meta', tag .. ':messages', tag .. ':turns', tag .. ':usage')
    redis.call('ZREM', index, ref)
    redis.call('ZREM', prefix .. ':owner:' .. owner .. ':sessions', session_id)
    deleted = deleted + 1
  end
end
return {deleted, orphans}
