-- The first round trip of a turn that continues a session: read what its upstream call needs,
-- then admit the turn (admission.lua), its hold counting the stored history.
-- KEYS: the owner's limit hash, its holds, the session's meta hash, its messages list
-- ARGV: as admit_turn.lua's (all three limits 0: no limit, nothing is checked)
-- Returns {admission or false, system prompt or nil, messages}; a refused turn returns
-- {admission} alone.
local system_prompt = redis.call('HGET', KEYS[3], 'system_prompt')
local messages = redis.call('LRANGE', KEYS[4], 0, -1)
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local admission = false
if limits[1] > 0 or limits[2] > 0 or limits[3] > 0 then
  local bytes = tonumber(ARGV[5]) + #(system_prompt or '')
  for _, message in ipairs(messages) do
    bytes = bytes + #message
  end
  local prices = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
  local tokens, cost = turn_hold(bytes, tonumber(ARGV[6]), prices)
  admission = admit(KEYS[1], KEYS[2], limits, {ARGV[4], tokens, cost})
  if admission[1] == 0 then
    return {admission}
  end
end
return {admission, system_prompt, messages}
