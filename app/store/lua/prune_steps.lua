-- Shared by the scripts that prune sessions; loaded ahead of them
-- (app.store.client.lua_script). On a standalone Redis prune_sessions.lua prunes a batch and
-- its index entries in one script; on a Redis Cluster prune_session.lua prunes one session in
-- its slot, and unindex_idle.lua drops index entries in the index's slot.

-- Delete a session if it is still idle since `cutoff`: one that received a turn after it was
-- picked is left alone. Returns 'deleted' and its owner; 'expired' when Redis expired it by TTL
-- (a straggling key goes too); or false when it is active.
local function prune_session(meta, messages, turns, usage, cutoff)
  local fields = redis.call('HMGET', meta, 'owner', 'updated')
  local owner, updated = fields[1], tonumber(fields[2])
  if not owner then
    redis.call('DEL', messages, turns, usage)
    return 'expired'
  end
  if updated and updated <= cutoff then
    redis.call('DEL', meta, messages, turns, usage)
    return 'deleted', owner
  end
  return false
end
