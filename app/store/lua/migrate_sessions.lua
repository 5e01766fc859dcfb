-- Move sessions of the layout before owner-scoped ids (keys tagged {<session id>}) to their
-- owner's name (tagged {<owner>:<session id>}), TTLs and all. A session already present
-- under the new name, or expired, is left for the pruner. Key names are derived from the ids:
-- the old layout only ever ran on one Redis, not a cluster.
-- KEYS: all-sessions index
-- ARGV: key prefix, session ids of the old layout...
-- Returns the number of sessions moved.
local index, prefix = KEYS[1], ARGV[1]
local moved = 0
for i = 2, #ARGV do
  local session_id = ARGV[i]
  local old = prefix .. ':{' .. session_id .. '}'
  local owner = redis.call('HGET', old .. ':meta', 'owner')
  local score = redis.call('ZSCORE', index, session_id)
  if owner and score then
    local new = prefix .. ':{' .. owner .. ':' .. session_id .. '}'
    if redis.call('EXISTS', new .. ':meta') == 0 then
      for _, part in ipairs({'meta', 'messages', 'turns', 'usage'}) do
        if redis.call('EXISTS', old .. ':' .. part) == 1 then
          redis.call('RENAME', old .. ':' .. part, new .. ':' .. part)
        end
      end
      redis.call('ZREM', index, session_id)
      redis.call('ZADD', index, score, owner .. ':' .. session_id)
      moved = moved + 1
    end
  end
end
return moved
