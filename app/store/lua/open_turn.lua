-- The first round trip of a turn that continues a session: read what its upstream call needs,
-- then admit the turn (admission.lua), its hold counting the stored history.
-- KEYS: the owner's limit hash, its holds, its refused-key note, the client address's failed
--       authentications, the session's meta hash, its messages list
-- ARGV: as admit_turn.lua's (all three limits 0 and no check of who calls: nothing is
--       checked)
-- Returns {admission or false, system prompt or nil, messages}; a refused turn returns
-- {admission} alone.
local check_refused, failure_limit = ARGV[10] == '1', tonumber(ARGV[11])
local refusal = guard(KEYS[3], KEYS[4], check_refused, failure_limit)
if refusal then
  return {refusal}
end
local system_prompt = redis.call('HGET', KEYS[5], 'system_prompt')
local messages = redis.call('LRANGE', KEYS[6], 0, -1)
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local admission = false
if limited(limits) then
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
elseif check_refused or failure_limit > 0 then
  admission = UNCOUNTED
end
return {admission, system_prompt, messages}
