-- wrk script: GET /api/v1/id/<random id in 1..count> with the bearer token, or a random path
-- of a file (one a line; a path n times in it is asked n times as often: bench/lookups.py).
--   wrk -t1 -c32 -d10s --latency -s bench/random_id.lua http://127.0.0.1:8080 -- TOKEN [COUNT | @PATHS]
-- The requests are built once in init(), so wrk spends its time on the wire, not in Lua.
-- done() prints one line "JSON {...}" with exact numbers for bench/run.py.

local requests = {}
local count = 10000

function init(args)
  local token = args[1] or os.getenv("TOKEN") or ""
  local headers = { ["Authorization"] = "Bearer " .. token }
  if args[2] and args[2]:sub(1, 1) == "@" then
    for path in io.lines(args[2]:sub(2)) do
      requests[#requests + 1] = wrk.format("GET", path, headers)
    end
    count = #requests
  else
    count = tonumber(args[2]) or count
    for id = 1, count do
      requests[id] = wrk.format("GET", "/api/v1/id/" .. id, headers)
    end
  end
  math.randomseed(os.time())
end

function request()
  return requests[math.random(count)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status))
end
