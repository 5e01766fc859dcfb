-- Correct a cut turn's estimated spend by what OpenRouter reports it cost, once: the estimate
-- leaves the queue in the same step, so a second worker finds nothing to do (correct_steps.lua).
-- KEYS: the queue of estimates (chat:usage:estimated), the owner's limit hash
-- ARGV: the estimate as queued, its UTC day (days since the epoch), tokens and micro-USD to add
--       (negative when the estimate was high)
-- Returns 1 when corrected, 0 when the estimate was no longer queued.
if not correction_ok(ARGV[2], ARGV[3], ARGV[4]) then
  return redis.error_reply('ERR correct_spend: a day, tokens and micro-USD, please')
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
correct_day(KEYS[2], ARGV[2], ARGV[3], ARGV[4])
return 1
