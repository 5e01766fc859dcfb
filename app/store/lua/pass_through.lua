-- A turn without a session, or a failed call: its usage record for the worker, and the turn
-- settled against its owner's limits (settle.lua), in one step. A replay (the client retried
-- after a timeout) changes nothing: the settle marks the turn, with or without limits.
-- KEYS: usage inbox, the owner's limit hash, its holds
-- ARGV: usage record JSON, turn id, tokens, micro-USD
-- Returns {tokens today, micro-USD today} (what turns in flight hold included), or
-- {-1, -1} for a replay.
if not settle_args_ok(ARGV[3], ARGV[4]) or not pcall(cjson.decode, ARGV[1]) then
  return redis.error_reply('ERR pass_through: a usage record, a turn id, tokens and micro-USD')
end
local day = settle(KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if not day then
  return {-1, -1}
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return day
