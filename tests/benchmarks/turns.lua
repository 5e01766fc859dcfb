-- wrk: non-streaming turns, each connection's thread continuing its own sessions.
-- Every request names one of SESSIONS sessions of its thread, in turn.
local SESSIONS = 32
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("prefix", "wrk-" .. thread_id .. "-")
end

function request()
  counter = counter + 1
  local body = '{"message":"w1 w2 w3 w4 w5 w6 w7 w8 w9 w10","model":"openai/gpt-4o","session_id":"'
    .. prefix .. (counter % SESSIONS) .. '"}'
  return wrk.format("POST", "/chat", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer sk-or-v1-" .. string.rep("b", 64),
  }, body)
end
