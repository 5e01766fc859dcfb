-- Count one failed authentication of a client address (auth_failures.lua has how).
-- KEYS: the address's counter (chat:authfail:{<address>})
-- Returns {failures in the window, ms until the window ends}
local count = count_failure(KEYS[1])
return {count, failure_window_left(KEYS[1])}
