-- Commit one turn atomically on a standalone Redis: its messages, the trim, the TTLs, the
-- indexes, the usage record and the settle (commit_steps.lua has the parts).
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
local problem = commit_problem(ARGV)
if problem then
  return redis.error_reply(problem)
end
local committed, count = commit_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV)
if not committed then
  return {2, count, -1, -1}
end
record_turn(KEYS[5], KEYS[8], KEYS[7], ARGV[2], ARGV[1], ARGV[4], ARGV[10])
local spent = ARGV[11] ~= '' and {tonumber(ARGV[11]), tonumber(ARGV[12])} or nil
local day = commit_owner(KEYS[6], KEYS[9], KEYS[10], ARGV[1], ARGV[4], ARGV[5], ARGV[3], spent)
if not day then
  return {1, count, -1, -1}
end
return {1, count, day[1], day[2]}
