-- Admit one turn that reads no session (admission.lua has how).
-- KEYS: the owner's limit hash (chat:limit:{<owner>})
-- ARGV: turns per minute (0: no limit), tokens per UTC day (0: no limit)
return admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
