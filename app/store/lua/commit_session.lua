-- The session's part of a commit on a Redis Cluster (commit_steps.lua), in the session's slot.
-- KEYS: meta, messages, turns, usage
-- ARGV: commit_turn.lua's
-- Returns {1, message count} when committed, {2, message count} for a retried call.
local problem = commit_problem(ARGV)
if problem then
  return redis.error_reply(problem)
end
local committed, count = commit_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV)
return {committed and 1 or 2, count}
