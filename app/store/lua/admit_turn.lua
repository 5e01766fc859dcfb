-- Admit one turn that reads no session (admission.lua has how).
-- KEYS: the owner's limit hash (chat:limit:{<owner>}), its holds (chat:limit:{<owner>}:holds),
--       its refused-key note (chat:refused:{<owner>}), the client address's failed
--       authentications (chat:authfail:{<address>})
-- ARGV: turns per minute, tokens per UTC day, micro-USD per UTC day (0: no limit), turn id,
--       the prompt's bytes, max_tokens, the model's prices (micro-USD: prompt and completion
--       token, request), 1 to check the note, failed authentications allowed per address
--       (0: no limit)
-- Returns admit()'s answer.
local refusal = guard(KEYS[3], KEYS[4], ARGV[10] == '1', tonumber(ARGV[11]))
if refusal then
  return refusal
end
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
if not limited(limits) then
  return UNCOUNTED
end
local prices = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local tokens, cost = turn_hold(tonumber(ARGV[5]), tonumber(ARGV[6]), prices)
return admit(KEYS[1], KEYS[2], limits, {ARGV[4], tokens, cost})
