-- The first round trip of a turn that continues a session: admit the turn (admission.lua),
-- then read what its upstream call needs.
-- KEYS: the owner's limit hash, the session's meta hash, its messages list
-- ARGV: turns per minute, tokens per UTC day (both 0: no limit, nothing is checked)
-- Returns {admission or nil, owner or nil, system prompt or nil, messages}; a refused turn
-- returns {admission} alone.
local rate, token_limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local admission = false
if rate > 0 or token_limit > 0 then
  admission = admit(KEYS[1], rate, token_limit)
  if admission[1] == 0 then
    return {admission}
  end
end
local meta = redis.call('HMGET', KEYS[2], 'owner', 'system_prompt')
return {admission, meta[1], meta[2], redis.call('LRANGE', KEYS[3], 0, -1)}
