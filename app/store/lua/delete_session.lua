-- Delete one owner's session and its index entries.
-- KEYS: meta, messages, turns, usage, all-sessions index, owner index
-- ARGV: session id, owner
-- Returns 1 when deleted, 0 when the owner had no such session.
-- Expired sessions leave index entries behind: drop them either way.
redis.call('ZREM', KEYS[5], ARGV[2] .. ':' .. ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
