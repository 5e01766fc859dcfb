-- wrk: non-streaming turns. `-- chat` (the default): POST /chat, each connection's thread
-- continuing its own sessions, one of SESSIONS in turn. `-- direct`: the same turn as the
-- API sends it upstream (the 10-message history replayed), to the stand-in itself.
local SESSIONS = 32
local WORDS = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"
local counter = 0
local thread_id = 0
local mode = "chat"
local direct_body = nil

function setup(thread)
  thread_id = thread_id + 1
  thread:set("prefix", "wrk-" .. thread_id .. "-")
end

function init(args)
  mode = args[1] or "chat"
  local messages = {}
  for i = 1, 10 do
    local role = (i % 2 == 1) and "user" or "assistant"
    messages[i] = '{"role":"' .. role .. '","content":"' .. WORDS .. '"}'
  end
  messages[11] = '{"role":"user","content":"' .. WORDS .. '"}'
  direct_body = '{"model":"openai/gpt-4o","max_tokens":1024,"messages":['
    .. table.concat(messages, ",") .. ']}'
end

local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer sk-or-v1-" .. string.rep("b", 64),
}

function request()
  if mode == "direct" then
    return wrk.format("POST", "/api/v1/chat/completions", headers, direct_body)
  end
  counter = counter + 1
  local body = '{"message":"' .. WORDS .. '","model":"openai/gpt-4o","session_id":"'
    .. prefix .. (counter % SESSIONS) .. '"}'
  return wrk.format("POST", "/chat", headers, body)
end
