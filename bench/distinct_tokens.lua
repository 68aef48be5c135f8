-- wrk script: GET /api/v1/id/<random id in 1..count>, each request with the next bearer token of
-- the file $TOKENS_FILE (one a line), round and round: a token-per-request client (bench/jwt_cost.py).
--   TOKENS_FILE=tokens.txt wrk -t1 -c32 -d10s -s bench/distinct_tokens.lua http://127.0.0.1:8080 -- TOKEN [COUNT]
-- random_id.lua beside it gives done(), the JSON line bench/run.py reads; init and request are these.

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "random_id.lua")

local tokens = {}
local next_token = 1
local count = 10000

function init(args)
  count = tonumber(args[2]) or count
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    tokens[#tokens + 1] = line
  end
  math.randomseed(os.time())
end

function request()
  local token = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format("GET", "/api/v1/id/" .. math.random(count), { ["Authorization"] = "Bearer " .. token })
end
