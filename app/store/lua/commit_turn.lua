-- Commit one turn atomically: its messages, the trim, the TTLs, the indexes, the usage record.
-- KEYS: meta, messages, turns, usage, all-sessions index, owner index, usage inbox, owners,
--       the owner's limit hash, its holds
-- ARGV: session id, owner, turn id, now (ms), ttl (ms), history cap, model, title,
--       system prompt ('' keeps the stored one), usage record JSON ('' for none),
--       tokens and micro-USD the turn spent, settled against the owner's limits ('' for
--       an owner without limits: settle.lua),
--       then the turn's messages as JSON, oldest first, the answer last
-- Returns {1, message count, tokens today, micro-USD today} when committed, {2, message
-- count, -1, -1} when this turn id was already committed (a retried call). The day's figures
-- count what turns in flight hold; -1 when the owner has no limits.
-- The session is the owner's (its keys are tagged {<owner>:<session id>}): the all-sessions
-- index names it so, the owner's index by its id.
local meta, messages, turns, usage, all_index, owner_index, inbox, owners, limit, holds =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local session_id, owner, turn_id, now, ttl, cap =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local settles = ARGV[11] ~= ''
local FIRST_MESSAGE = 13

-- Every argument is checked before the first write: a bad one fails the commit whole.
if not (is_whole(now, 0, 1e15) and is_whole(ttl, 1, 1e15) and is_whole(cap, 2, 1e9)) then
  return redis.error_reply('ERR commit_turn: now, ttl and the history cap must be whole numbers')
end
if settles and not settle_args_ok(ARGV[11], ARGV[12]) then
  return redis.error_reply('ERR commit_turn: the turn spent a count of tokens and micro-USD')
end
if ARGV[10] ~= '' and not pcall(cjson.decode, ARGV[10]) then
  return redis.error_reply('ERR commit_turn: the usage record is not JSON')
end
if #ARGV < FIRST_MESSAGE then
  return redis.error_reply('ERR commit_turn: no messages to commit')
end

if redis.call('LPOS', turns, turn_id) then
  return {2, redis.call('LLEN', messages), -1, -1}
end

local function role_at(index)
  local ok, message = pcall(cjson.decode, redis.call('LINDEX', messages, index))
  return ok and type(message) == 'table' and message.role or nil
end

-- Drop the oldest turns: at most `cap` messages are kept, starting at a user message, so a
-- tool result never loses the call it answers. With no user message among the last `cap`
-- (one long run of tool calls), the cut is plain and skips leading tool results.
local function trim(count)
  local cut = nil
  for index = count - cap, count - 1 do
    if role_at(index) == 'user' then
      cut = index
      break
    end
  end
  if not cut then
    cut = count - cap
    while cut < count - 1 and role_at(cut) == 'tool' do
      cut = cut + 1
    end
  end
  redis.call('LTRIM', messages, cut, -1)
  return count - cut
end

if redis.call('HSETNX', meta, 'owner', owner) == 1 then
  redis.call('HSET', meta, 'created', now, 'title', ARGV[8])
end
for index = FIRST_MESSAGE, #ARGV do
  redis.call('RPUSH', messages, ARGV[index])
end
local count = redis.call('LLEN', messages)
if count > cap then
  count = trim(count)
end
redis.call('HINCRBY', meta, 'turns', 1)
redis.call('HSET', meta, 'updated', now, 'model', ARGV[7], 'message_count', count)
if ARGV[9] ~= '' then
  redis.call('HSET', meta, 'system_prompt', ARGV[9])
end
redis.call('LPUSH', turns, turn_id)
redis.call('LTRIM', turns, 0, 15)

for _, key in ipairs({meta, messages, turns, usage, owner_index}) do
  redis.call('PEXPIRE', key, ttl)
end
redis.call('ZADD', all_index, now, owner .. ':' .. session_id)
redis.call('ZADD', owner_index, now, session_id)
redis.call('ZADD', owners, now, owner)
if ARGV[10] ~= '' then
  redis.call('RPUSH', inbox, ARGV[10])
end

local day = settles and settle(limit, holds, turn_id, tonumber(ARGV[11]), tonumber(ARGV[12]))
if not day then
  return {1, count, -1, -1}
end
return {1, count, day[1], day[2]}
