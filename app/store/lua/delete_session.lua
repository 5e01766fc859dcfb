-- Delete a session and its index entries, if `owner` holds it.
-- KEYS: meta, messages, turns, usage, all-sessions index, owner index
-- ARGV: session id, owner
-- Returns 1 when deleted, 0 when there was no such session for this owner.
local current = redis.call('HGET', KEYS[1], 'owner')
if current and current ~= ARGV[2] then
  return 0
end
-- Expired sessions leave index entries behind: drop them either way.
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if not current then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
