-- Correct a cut turn's estimated spend by what OpenRouter reports it cost, once: the estimate
-- leaves the queue in the same step, so a second worker finds nothing to do.
-- KEYS: the queue of estimates (chat:usage:estimated), the owner's limit hash
-- ARGV: the estimate as queued, its UTC day (days since the epoch), tokens and micro-USD to add
--       (negative when the estimate was high)
-- Returns 1 when corrected, 0 when the estimate was no longer queued.
if not (is_whole(ARGV[2], 0, 1e9) and is_whole(ARGV[3], -MAX_TOKENS_PER_CALL, MAX_TOKENS_PER_CALL)
    and is_whole(ARGV[4], -MAX_COST_PER_CALL * 1e6, MAX_COST_PER_CALL * 1e6)) then
  return redis.error_reply('ERR correct_spend: a day, tokens and micro-USD, please')
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
-- The day's counts are kept while the day lasts; a correction for a day gone by has no day.
if tonumber(redis.call('HGET', KEYS[2], 'day')) == tonumber(ARGV[2]) then
  for field, delta in pairs({tokens = ARGV[3], cost = ARGV[4]}) do
    if redis.call('HINCRBY', KEYS[2], field, delta) < 0 then
      redis.call('HSET', KEYS[2], field, 0)
    end
  end
end
return 1
