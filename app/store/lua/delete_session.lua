-- Delete one owner's session, once: the delete leaves a tombstone holding its request id (for
-- SETTLED_MS), so a replay after a Redis timeout answers as the delete did rather than "no
-- such session". On a standalone Redis it drops the session's index entries too; on a Redis
-- Cluster they are in other slots, and the API drops them with plain ZREMs.
-- KEYS: meta, messages, turns, usage, tombstone[, all-sessions index, owner index]
-- ARGV: session id, owner, request id
-- Returns 1 when deleted (now, or by this request before), 0 when the owner had no such
-- session.
-- Expired sessions leave index entries behind: drop them either way.
if #KEYS == 7 then
  redis.call('ZREM', KEYS[6], ARGV[2] .. ':' .. ARGV[1])
  redis.call('ZREM', KEYS[7], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('GET', KEYS[5]) == ARGV[3] and 1 or 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], ARGV[3], 'PX', SETTLED_MS)
return 1
