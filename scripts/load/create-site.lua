-- create-site.lua: wrk script for POST /api/v1/sites (the accept path).
--
--   CHOM_LOAD_TOKEN=... wrk -t2 -c200 -d30s --latency -s scripts/load/create-site.lua http://127.0.0.1:8080
--
-- Environment:
--   CHOM_LOAD_TOKEN        bearer token with the write scope (required)
--   CHOM_LOAD_RUN          run tag put in every domain, so two runs against one
--                          database never collide (default: the current time)
--   CHOM_LOAD_IDEMPOTENCY  1 = send an Idempotency-Key (unique per request)
--   CHOM_LOAD_RESULT       if set, done() also writes key=value lines there
--                          (used by accept.sh for its ledger check)
--
-- Every request creates a new site: domain s<thread>-<n>.r<run>.load.example,
-- site_type html. wrk runs one Lua state per thread, so each thread counts its
-- own responses; setup() keeps the thread objects and done() reads their tables
-- back with thread:get() and sums them.

local token = os.getenv("CHOM_LOAD_TOKEN")
if token == nil or token == "" then
	io.stderr:write("create-site.lua: CHOM_LOAD_TOKEN is not set\n")
	os.exit(2)
end
local run_tag = os.getenv("CHOM_LOAD_RUN")
if run_tag == nil or run_tag == "" then
	run_tag = tostring(os.time())
end
local with_key = os.getenv("CHOM_LOAD_IDEMPOTENCY") == "1"

-- setup() runs in the main Lua state, once per thread, before the threads start.
local threads = {}
local next_id = 1

function setup(thread)
	thread:set("id", next_id)
	table.insert(threads, thread)
	next_id = next_id + 1
end

-- The rest runs in each thread's own Lua state.
function init(args)
	n = 0          -- requests built by this thread
	statuses = {}  -- status code (as string) -> count
	headers = {
		["Authorization"] = "Bearer " .. token,
		["Content-Type"] = "application/json",
	}
end

function request()
	n = n + 1
	local domain = string.format("s%d-%d.r%s.load.example", id, n, run_tag)
	if with_key then
		headers["Idempotency-Key"] = "load-" .. domain
	end
	local body = '{"domain":"' .. domain .. '","site_type":"html"}'
	return wrk.format("POST", "/api/v1/sites", headers, body)
end

function response(status, hdrs, body)
	local k = tostring(status)
	statuses[k] = (statuses[k] or 0) + 1
end

local function ms(us)
	return string.format("%.1fms", us / 1000)
end

function done(summary, latency, requests)
	local total, sent = {}, 0
	for _, t in ipairs(threads) do
		sent = sent + (t:get("n") or 0)
		for code, c in pairs(t:get("statuses") or {}) do
			total[code] = (total[code] or 0) + c
		end
	end
	local secs = summary.duration / 1e6
	local e = summary.errors
	local ok = total["202"] or 0
	local non202 = summary.requests - ok
	local codes = {}
	for code in pairs(total) do table.insert(codes, code) end
	table.sort(codes)
	local by_status = {}
	for _, code in ipairs(codes) do
		if code ~= "202" then table.insert(by_status, code .. "=" .. total[code]) end
	end

	io.write("---- create-site.lua ----\n")
	io.write(string.format("  responses   %d in %.1fs  (%.0f req/s)\n", summary.requests, secs, summary.requests / secs))
	io.write(string.format("  latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		ms(latency:percentile(50.0)), ms(latency:percentile(90.0)), ms(latency:percentile(99.0)),
		ms(latency:percentile(99.9)), ms(latency.max)))
	io.write(string.format("  202         %d\n", ok))
	io.write(string.format("  non-202     %d %s\n", non202, table.concat(by_status, " ")))
	io.write(string.format("  errors      connect %d, read %d, write %d, timeout %d\n",
		e.connect, e.read, e.write, e.timeout))
	io.write(string.format("  unanswered  %d (requests in flight when wrk stopped)\n", sent - summary.requests))

	local path = os.getenv("CHOM_LOAD_RESULT")
	if path ~= nil and path ~= "" then
		local f = assert(io.open(path, "w"))
		local function kv(k, v) f:write(k, "=", tostring(v), "\n") end
		kv("requests", summary.requests)
		kv("sent", sent)
		kv("duration_us", summary.duration)
		kv("rps", string.format("%.0f", summary.requests / secs))
		kv("s202", ok)
		kv("non202", non202)
		kv("non202_by_status", table.concat(by_status, ","))
		kv("err_connect", e.connect)
		kv("err_read", e.read)
		kv("err_write", e.write)
		kv("err_timeout", e.timeout)
		kv("err_status", e.status)
		kv("p50_ms", string.format("%.1f", latency:percentile(50.0) / 1000))
		kv("p90_ms", string.format("%.1f", latency:percentile(90.0) / 1000))
		kv("p99_ms", string.format("%.1f", latency:percentile(99.0) / 1000))
		kv("p999_ms", string.format("%.1f", latency:percentile(99.9) / 1000))
		kv("max_ms", string.format("%.1f", latency.max / 1000))
		f:close()
	end
end
