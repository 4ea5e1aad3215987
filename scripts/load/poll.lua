-- poll.lua: GET /api/v1/operations/{id} over the IDs listed (one per line) in the
-- file named by CHOM_POLL_IDS, with the token in CHOM_LOAD_TOKEN. Each thread
-- walks the list from its own offset. Prints p50/p90/p99/p99.9 and non-200s.
local ids = {}
local token = os.getenv("CHOM_LOAD_TOKEN")
for line in io.lines(os.getenv("CHOM_POLL_IDS")) do ids[#ids + 1] = line end

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  n = tid * 7919
  bad = 0
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  n = n + 1
  return wrk.format("GET", "/api/v1/operations/" .. ids[(n % #ids) + 1])
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local nbad = 0
  for _, t in ipairs(threads) do nbad = nbad + t:get("bad") end
  io.write(string.format("poll: %d requests in %.1fs = %.0f req/s; p50 %.2fms p90 %.2fms p99 %.2fms p99.9 %.2fms; non-200 %d; socket errors %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, nbad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
