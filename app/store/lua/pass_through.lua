-- A turn without a session, under a token limit: its usage record for the worker, and its
-- tokens counted against the owner's UTC day, in one step.
-- KEYS: usage inbox, the owner's limit hash
-- ARGV: usage record JSON, tokens
-- Returns the owner's tokens of the day.
redis.call('RPUSH', KEYS[1], ARGV[1])
return add_day_tokens(KEYS[2], tonumber(ARGV[2]))
