-- A turn without a session, under a token limit: its usage record for the worker, and its
-- tokens counted against the owner's UTC day, in one step.
-- KEYS: usage inbox, the owner's limit hash
-- ARGV: usage record JSON, tokens
-- Returns the owner's tokens of the day.
if not is_whole(ARGV[2], 0, MAX_TOKENS_PER_CALL) or not pcall(cjson.decode, ARGV[1]) then
  return redis.error_reply('ERR pass_through: a usage record and a count of tokens, please')
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return add_day_tokens(KEYS[2], tonumber(ARGV[2]))
