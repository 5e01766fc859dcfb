-- Delete the given sessions if they are still idle since `cutoff`: a session that received a
-- turn after it was picked is left alone. Index entries of sessions Redis already expired are
-- dropped. Key names are derived from the ids (one Redis, not a cluster).
-- KEYS: all-sessions index
-- ARGV: key prefix, cutoff (ms), session ids...
-- Returns {sessions deleted, index entries of expired sessions dropped}
local index, prefix, cutoff = KEYS[1], ARGV[1], tonumber(ARGV[2])
local deleted, orphans = 0, 0
for i = 3, #ARGV do
  local session_id = ARGV[i]
  local tag = prefix .. ':{' .. session_id .. '}'
  local fields = redis.call('HMGET', tag .. ':meta', 'owner', 'updated')
  local owner, updated = fields[1], tonumber(fields[2])
  if not owner then
    -- Expired by TTL: only the index entry (and perhaps a straggling key) is left.
    redis.call('DEL', tag .. ':messages', tag .. ':turns', tag .. ':usage')
    redis.call('ZREM', index, session_id)
    orphans = orphans + 1
  elseif updated and updated <= cutoff then
    redis.call('DEL', tag .. ':meta', tag .. ':messages', tag .. ':turns', tag .. ':usage')
    redis.call('ZREM', index, session_id)
    redis.call('ZREM', prefix .. ':owner:' .. owner .. ':sessions', session_id)
    deleted = deleted + 1
  end
end
return {deleted, orphans}
