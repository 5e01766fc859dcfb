-- Shared by the scripts that commit a turn; loaded ahead of them, after settle.lua
-- (app.store.client.lua_script). A commit has three parts, each within one slot of a Redis
-- Cluster: the session's keys ({<owner>:<session id>}), the owner's ({<owner>}) and the
-- owner's shard of the global structures (app.store.keys.Layout). On a standalone Redis,
-- commit_turn.lua runs the three in one script; on a cluster each runs as a script of its
-- own (commit_owner.lua and record_turn.lua, then commit_session.lua), each changing nothing
-- when replayed.

-- Where the messages start in a commit's ARGV (commit_turn.lua has the order).
local FIRST_MESSAGE = 13

-- What is wrong with a commit's ARGV, or nil: every argument is checked before the first
-- write, so a bad one fails the commit whole.
local function commit_problem(argv)
  if not (is_whole(argv[4], 0, 1e15) and is_whole(argv[5], 1, 1e15)
          and is_whole(argv[6], 2, 1e9)) then
    return 'ERR commit_turn: now, ttl and the history cap must be whole numbers'
  end
  if argv[11] ~= '' and not settle_args_ok(argv[11], argv[12]) then
    return 'ERR commit_turn: the turn spent a count of tokens and micro-USD'
  end
  if argv[10] ~= '' and not pcall(cjson.decode, argv[10]) then
    return 'ERR commit_turn: the usage record is not JSON'
  end
  if #argv < FIRST_MESSAGE then
    return 'ERR commit_turn: no messages to commit'
  end
  return nil
end

-- The session's part: its messages, the trim, its meta hash and its TTLs. Returns true and
-- the message count, or false and the count when this turn id was committed already (a
-- retried call).
local function commit_session(meta, messages, turns, usage, argv)
  local owner, turn_id, now, ttl, cap = argv[2], argv[3], argv[4], argv[5], tonumber(argv[6])
  if redis.call('LPOS', turns, turn_id) then
    return false, redis.call('LLEN', messages)
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
    redis.call('HSET', meta, 'created', now, 'title', argv[8])
  end
  for index = FIRST_MESSAGE, #argv do
    redis.call('RPUSH', messages, argv[index])
  end
  local count = redis.call('LLEN', messages)
  if count > cap then
    count = trim(count)
  end
  redis.call('HINCRBY', meta, 'turns', 1)
  redis.call('HSET', meta, 'updated', now, 'model', argv[7], 'message_count', count)
  if argv[9] ~= '' then
    redis.call('HSET', meta, 'system_prompt', argv[9])
  end
  redis.call('LPUSH', turns, turn_id)
  redis.call('LTRIM', turns, 0, 15)
  for _, key in ipairs({meta, messages, turns, usage}) do
    redis.call('PEXPIRE', key, ttl)
  end
  return true, count
end

-- The owner's part: the session in the owner's index ('' for a turn without one), and the
-- turn settled against the owner's limits when `spent` ({tokens, micro-USD}) is given.
-- Returns the day's {tokens, micro-USD} (settle.lua), or nil: no limits, or a replay.
local function commit_owner(owner_index, limit, holds, session_id, now, ttl, turn_id, spent)
  if session_id ~= '' then
    redis.call('ZADD', owner_index, now, session_id)
    redis.call('PEXPIRE', owner_index, ttl)
  end
  if spent then
    return settle(limit, holds, turn_id, spent[1], spent[2])
  end
  return nil
end

-- The shard's part: the session in the global indexes ('' for a turn without one), and the
-- turn's usage record in the inbox ('' for none).
local function record_turn(all_index, owners, inbox, owner, session_id, now, record)
  if session_id ~= '' then
    redis.call('ZADD', all_index, now, owner .. ':' .. session_id)
    redis.call('ZADD', owners, now, owner)
  end
  if record ~= '' then
    redis.call('RPUSH', inbox, record)
  end
end
