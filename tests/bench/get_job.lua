-- wrk script for tests/bench/server_bench.sh: GET one job with a bearer token.
-- Environment: GPPD_BENCH_TOKEN (the token), GPPD_BENCH_PATH (the path).
-- At the end it prints one JSON line "WRKJSON {...}" with requests/s, the
-- latency percentiles (ms) and the error counts, for the script to parse.
local token = os.getenv("GPPD_BENCH_TOKEN")
local path = os.getenv("GPPD_BENCH_PATH") or "/api/v1/health"

wrk.method = "GET"
wrk.path = path
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- No response() callback: wrk would hand every reply to Lua, costing CPU
-- that this 2-core box shares with gppd; wrk counts statuses >= 400 itself.

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
