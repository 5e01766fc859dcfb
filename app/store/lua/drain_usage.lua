-- Apply a batch of usage events from the inbox and drop them, in one atomic step: each event
-- counts exactly once, however many workers drain at the same time and however often a job is
-- retried. Every event is checked before anything of it is written; one that cannot be applied
-- goes whole, with its reason, to the dead-letter list, so one bad event never jams the rest.
-- Session and metrics keys are derived from the events (one Redis, not a cluster: there
-- drain_usage_shard.lua and apply_session_usage.lua do it in single-slot steps).
-- KEYS: usage inbox, dead-letter list (its count: the list's name and ':count')
-- ARGV: batch size, key prefix, metrics retention (ms), dead-letter cap, the shard's suffix
--       ('' on a standalone Redis: app.store.keys.Shard)
-- Returns {events applied, events set aside}
local inbox, dead = KEYS[1], KEYS[2]
local batch, prefix, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local dead_cap, suffix = tonumber(ARGV[4]), ARGV[5] or ''

local function apply(event)
  add_daily_metrics(prefix .. ':metrics:' .. event.day .. suffix, event, retention)
  if given(event.session_id) ~= nil then
    local tag = prefix .. ':{' .. event.session_id .. '}'
    add_session_usage(tag .. ':meta', tag .. ':usage', event)
  end
end

return drain_batch(inbox, dead, batch, dead_cap, apply)
