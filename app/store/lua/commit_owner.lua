-- The owner's part of a commit, or of a turn without a session, on a Redis Cluster
-- (commit_steps.lua), in the owner's slot.
-- KEYS: the owner's session index, its limit hash, its holds
-- ARGV: session id ('' for none), now (ms), ttl (ms), turn id, tokens and micro-USD the turn
--       spent ('' for an owner without limits)
-- Returns {tokens today, micro-USD today}, or {-1, -1}: no limits, or a replay of the settle.
if not (is_whole(ARGV[2], 0, 1e15) and is_whole(ARGV[3], 1, 1e15)) then
  return redis.error_reply('ERR commit_owner: now and ttl must be whole numbers')
end
if ARGV[5] ~= '' and not settle_args_ok(ARGV[5], ARGV[6]) then
  return redis.error_reply('ERR commit_owner: the turn spent a count of tokens and micro-USD')
end
local spent = ARGV[5] ~= '' and {tonumber(ARGV[5]), tonumber(ARGV[6])} or nil
local day = commit_owner(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], spent)
return day or {-1, -1}
