-- Drop owner-index entries idle since `cutoff` (their sessions are gone), and forget owners
-- whose index Redis expired. Key names are derived from the ids (one Redis, not a cluster).
-- KEYS: owners set
-- ARGV: key prefix, cutoff (ms), owner ids...
-- Returns {entries dropped, owners forgotten}
local owners, prefix, cutoff = KEYS[1], ARGV[1], ARGV[2]
local dropped, forgotten = 0, 0
for i = 3, #ARGV do
  local index = prefix .. ':owner:' .. ARGV[i] .. ':sessions'
  dropped = dropped + redis.call('ZREMRANGEBYSCORE', index, '-inf', cutoff)
  if redis.call('EXISTS', index) == 0 then
    redis.call('ZREM', owners, ARGV[i])
    forgotten = forgotten + 1
  end
end
return {dropped, forgotten}
