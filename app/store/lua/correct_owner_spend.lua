-- The owner's part of a correction on a Redis Cluster (correct_steps.lua), in the owner's slot,
-- run once the worker has claimed the estimate (ZREM from its shard's queue).
-- KEYS: the owner's limit hash
-- ARGV: the UTC day (days since the epoch), tokens and micro-USD to add
-- Returns 1.
if not correction_ok(ARGV[1], ARGV[2], ARGV[3]) then
  return redis.error_reply('ERR correct_owner_spend: a day, tokens and micro-USD, please')
end
correct_day(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
