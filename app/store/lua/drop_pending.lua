-- Drop applied events from a shard's pending list (drain_usage_shard.lua), in its slot. They are
-- its head as a worker read it, unless another worker dropped some meanwhile: the entries are
-- unique (their sequence numbers), and new ones only come at the tail.
-- KEYS: the pending list
-- ARGV: the entries applied, in the list's order
-- Returns how many were dropped.
local pending, count = KEYS[1], #ARGV
if count == 0 then
  return 0
end
if redis.call('LINDEX', pending, 0) == ARGV[1] and redis.call('LINDEX', pending, count - 1) == ARGV[count] then
  redis.call('LTRIM', pending, count, -1)
  return count
end
local dropped = 0
for i = 1, count do
  dropped = dropped + redis.call('LREM', pending, 1, ARGV[i])
end
return dropped
