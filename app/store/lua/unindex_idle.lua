-- Drop members of an index (a sorted set scored by last activity) that are still idle since
-- `cutoff`, on a Redis Cluster, in the index's slot: a session or owner active again since the
-- worker picked it has a later score, and stays.
-- KEYS: the index
-- ARGV: cutoff (ms), members...
-- Returns how many were dropped.
local index, cutoff = KEYS[1], tonumber(ARGV[1])
if not cutoff then
  return redis.error_reply('ERR unindex_idle: the cutoff must be a number')
end
local dropped = 0
for i = 2, #ARGV do
  local score = tonumber(redis.call('ZSCORE', index, ARGV[i]))
  if score and score <= cutoff then
    dropped = dropped + redis.call('ZREM', index, ARGV[i])
  end
end
return dropped
