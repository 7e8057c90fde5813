#!/usr/bin/env bash
# tests/bench/server_bench.sh [BUILD] - gppd's server figures (issue 5, "Speed").
# Bench only, never in CI (meson test --suite bench server_bench, or by hand).
#
# Starts real gppd processes on 127.0.0.1 (port 0) with temporary data
# folders and measures:
#   a. wrk, 2 threads, 100 connections: GET /api/v1/jobs/{id} with the bearer
#      token (tests/bench/get_job.lua) - requests/s, p50/p99 - alternated
#      with the same run against a trivial libmicrohttpd server answering as
#      many bytes (ingest_sim mhd-hello, the ceiling for this machine), PAIRS
#      times; medians, min and max (BENCHMARKS.md).
#   b. metric ingest: 8 simulated workers (ingest_sim ingest, the real worker
#      protocol) each holding a stage, streaming 4096-point batches as fast as
#      acks allow; points/s, then the stored count checked over HTTP and with
#      sqlite3.
#   c. GET /api/v1/jobs/{id}/metrics?max_points=1000 on a job holding
#      1 000 000 points (ingested by one simulated worker): p50/p95, for every
#      series of the job (the dashboard's request) and for one series.
#   d. queued stage -> idle worker: one idle simulated worker, 50 jobs
#      submitted one after the other; time to the assign frame.
# Prints a markdown table and writes JSON to $GPPD_BENCH_OUT
# (default BUILD/server_bench.json).  Use a release build:
#   meson setup B --buildtype=release -Dcuda=disabled
#   ninja -C B daemon/gppd tests/bench/ingest_sim && tests/bench/server_bench.sh B
# Knobs: GPPD_BENCH_DURATION (s per wrk run, 20 as BENCHMARKS.md says), GPPD_BENCH_PAIRS (5),
# GPPD_BENCH_INGEST_POINTS (2000000), GPPD_BENCH_QUERY_POINTS (1000000),
# GPPD_BENCH_JOBS (50), GPPD_BENCH_ONLY (a subset of "abcd"),
# GPPD_BENCH_DATA_ROOT (where the data folders go, /tmp; /dev/shm shows the
# figures without the disk's fsync).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
gppd="$build/daemon/gppd"
sim="$build/tests/bench/ingest_sim"
out=${GPPD_BENCH_OUT:-$build/server_bench.json}
duration=${GPPD_BENCH_DURATION:-20}
pairs=${GPPD_BENCH_PAIRS:-5}
ingest_points=${GPPD_BENCH_INGEST_POINTS:-2000000}
query_points=${GPPD_BENCH_QUERY_POINTS:-1000000}
n_jobs=${GPPD_BENCH_JOBS:-50}
only=${GPPD_BENCH_ONLY:-abcd}
py=/usr/bin/python3

for x in "$gppd" "$sim"; do
  [ -x "$x" ] || { echo "server_bench: $x is missing (ninja -C $build daemon/gppd tests/bench/ingest_sim)" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "server_bench: wrk is missing (Debian package wrk)" >&2; exit 2; }
command -v sqlite3 >/dev/null || { echo "server_bench: sqlite3 is missing" >&2; exit 2; }

tmp=$(mktemp -d "${GPPD_BENCH_DATA_ROOT:-/tmp}/gppd-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

buildtype=$($py -c 'import json,sys; print([o["value"] for o in json.load(open(sys.argv[1])) if o["name"]=="buildtype"][0])' \
  "$build/meson-info/intro-buildoptions.json" 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# start_gppd NAME: a gppd on port 0 with its own data folder; sets
# HTTP, LINK, DATA.
start_gppd() {
  DATA="$tmp/$1"
  mkdir -p "$DATA"
  "$gppd" --listen 127.0.0.1:0 --worker-listen 127.0.0.1:0 --data-dir "$DATA/data" \
    --web-root "$tmp/no-web" >"$DATA/gppd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    HTTP=$(sed -n 's/.*msg="listening" http=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$DATA/gppd.log" | head -1)
    LINK=$(sed -n 's/.*worker=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$DATA/gppd.log" | head -1)
    [ -n "$HTTP" ] && [ -n "$LINK" ] && return 0
    sleep 0.05
  done
  echo "server_bench: gppd did not start:" >&2; cat "$DATA/gppd.log" >&2; exit 1
}

stop_last() {
  local p=${pids[-1]}
  kill -TERM "$p"; wait "$p" || { echo "server_bench: gppd exited $?" >&2; exit 1; }
  unset 'pids[-1]'
}

json_get() { $py -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

results="$tmp/results.jsonl"
: >"$results"

# ---- a. wrk: GET /api/v1/jobs/{id} against the libmicrohttpd ceiling ---------------------
if [[ $only == *a* ]]; then
  start_gppd wrk
  token=$(cat "$DATA/data/admin.token")
  job=$(curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"name":"bench","dataset":{"format":"idx","path":"/nonexistent-bench"},"model":"lenet5"}' "http://$HTTP/api/v1/jobs" \
    | $py -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  size=$(curl -sf -H "Authorization: Bearer $token" "http://$HTTP/api/v1/jobs/$job" | wc -c)
  "$sim" mhd-hello --port 0 --size "$size" >"$tmp/hello.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    hello_port=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$tmp/hello.out")
    [ -n "$hello_port" ] && break; sleep 0.05
  done
  [ -n "$hello_port" ] || { echo "server_bench: the libmicrohttpd ceiling did not start:" >&2; cat "$tmp/hello.out" >&2; exit 1; }
  run_wrk() { # URL PATH TOKEN
    GPPD_BENCH_PATH=$2 GPPD_BENCH_TOKEN=$3 wrk -t2 -c100 -d"${duration}s" --latency \
      -s "$here/get_job.lua" "$1" | sed -n 's/^WRKJSON //p'
  }
  # warm-up
  GPPD_BENCH_PATH=/api/v1/jobs/$job GPPD_BENCH_TOKEN=$token wrk -t2 -c100 -d2s \
    -s "$here/get_job.lua" "http://$HTTP" >/dev/null
  for i in $(seq 1 "$pairs"); do
    g=$(run_wrk "http://$HTTP" "/api/v1/jobs/$job" "$token")
    h=$(run_wrk "http://127.0.0.1:$hello_port" "/" "")
    echo "{\"section\":\"wrk\",\"pair\":$i,\"gppd\":$g,\"hello\":$h,\"bytes\":$size}" >>"$results"
    echo "server_bench: wrk pair $i: gppd $(json_get "$g" rps) req/s p99 $(json_get "$g" p99_ms) ms;" \
      "hello $(json_get "$h" rps) req/s p99 $(json_get "$h" p99_ms) ms" >&2
  done
  kill -TERM "${pids[-1]}"; wait "${pids[-1]}" || true; unset 'pids[-1]'
  stop_last
fi

# ---- b + c. ingest from 8 simulated workers; queries over 1e6 points ----------------------
if [[ $only == *b* || $only == *c* ]]; then
  start_gppd ingest
  common=(--http "$HTTP" --link "$LINK" --token-file "$DATA/data/admin.token"
          --worker-token-file "$DATA/data/worker.token")
  if [[ $only == *b* ]]; then
    r=$("$sim" ingest "${common[@]}" --workers 8 --points "$ingest_points" --batch 4096 --window 4)
    sent=$(json_get "$r" points_sent)
    counted=$(sqlite3 "file:$DATA/data/gppd.db?mode=ro" 'SELECT count(*) FROM metrics')
    [ "$counted" = "$sent" ] || { echo "server_bench: sqlite3 counts $counted points, $sent were sent" >&2; exit 1; }
    echo "{\"section\":\"ingest\",\"result\":$r,\"sqlite_count\":$counted}" >>"$results"
    echo "server_bench: ingest $(json_get "$r" points_per_s) points/s, $counted stored" >&2
  fi
  if [[ $only == *c* ]]; then
    before=$(sqlite3 "file:$DATA/data/gppd.db?mode=ro" 'SELECT count(*) FROM metrics')
    r=$("$sim" ingest "${common[@]}" --workers 1 --points "$query_points" --batch 4096 --window 4)
    job=$($py -c 'import json,sys; print(json.loads(sys.argv[1])["jobs"][0])' "$r")
    after=$(sqlite3 "file:$DATA/data/gppd.db?mode=ro" 'SELECT count(*) FROM metrics')
    echo "{\"section\":\"ingest1\",\"result\":$r,\"sqlite_count\":$((after - before))}" >>"$results"
    for q in "max_points=1000" "max_points=1000&limit=1000000" "name=loss&max_points=1000&limit=1000000"; do
      r=$("$sim" query "${common[@]}" --job "$job" --requests 50 --query "$q")
      echo "{\"section\":\"query\",\"result\":$r,\"db_points\":$after}" >>"$results"
      echo "server_bench: query $q: p95 $(json_get "$r" p95_ms) ms over $(json_get "$r" scanned) points" >&2
    done
  fi
  stop_last
fi

# ---- d. queued stage -> idle worker -------------------------------------------------------
if [[ $only == *d* ]]; then
  start_gppd latency
  r=$("$sim" latency --http "$HTTP" --link "$LINK" --token-file "$DATA/data/admin.token" \
        --worker-token-file "$DATA/data/worker.token" --jobs "$n_jobs" --trace "$tmp/assign.trace")
  # from gppd's "job submitted" line (logged after the commit that queued the
  # stage; ms resolution) to the assign frame's arrival at the worker
  logged=$($py - "$DATA/gppd.log" "$tmp/assign.trace" <<'EOF'
import calendar, json, re, sys, time
sub = {}
for line in open(sys.argv[1]):
    m = re.match(r'ts=(\S+)Z level=info msg="job submitted" job=(\S+)', line)
    if m:
        t = time.strptime(m.group(1).split('.')[0], '%Y-%m-%dT%H:%M:%S')
        sub[m.group(2)] = calendar.timegm(t) * 1000.0 + int(m.group(1).split('.')[1])
d = sorted(float(t) - sub[j] for j, t in (l.split() for l in open(sys.argv[2])) if j in sub)
pct = lambda p: d[max(0, -(-len(d) * p // 100) - 1)]
print(json.dumps({'n': len(d), 'p50': pct(50), 'p95': pct(95), 'max': d[-1]}))
EOF
)
  echo "{\"section\":\"latency\",\"result\":$r,\"from_log_ms\":$logged}" >>"$results"
  stop_last
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report --------------------------------------------------------------------------------
$py - "$results" "$out" "$buildtype" "$load_before" "$load_after" "$duration" <<'EOF'
import json, os, statistics, sys
path, out, buildtype, load_before, load_after, duration = sys.argv[1:7]
rows = [json.loads(l) for l in open(path) if l.strip()]
res = {'machine': {'cpus': os.cpu_count(), 'load_before': load_before, 'load_after': load_after,
                   'buildtype': buildtype}, 'sections': rows}
table = ['| measure | result | goal | notes |', '| --- | --- | --- | --- |']

def mmm(v, fmt):
    return '%s (%s..%s)' % (fmt % statistics.median(v), fmt % min(v), fmt % max(v))

wrk = [r for r in rows if r['section'] == 'wrk']
if wrk:
    g_rps = [r['gppd']['rps'] for r in wrk]; h_rps = [r['hello']['rps'] for r in wrk]
    g50 = [r['gppd']['p50_ms'] for r in wrk]; g99 = [r['gppd']['p99_ms'] for r in wrk]
    h99 = [r['hello']['p99_ms'] for r in wrk]
    ratio = [r['gppd']['rps'] / r['hello']['rps'] for r in wrk]
    errs = sum(r['gppd']['errors_status'] + r['gppd']['errors_read'] + r['gppd']['errors_timeout']
               + r['gppd']['errors_connect'] for r in wrk)
    res['wrk'] = {'gppd_rps_median': statistics.median(g_rps), 'gppd_p99_ms_median': statistics.median(g99),
                  'hello_rps_median': statistics.median(h_rps), 'ratio_median': statistics.median(ratio)}
    table.append('| GET /api/v1/jobs/{id}, wrk -t2 -c100, %s s x %d | %s req/s, p50 %s ms, p99 %s ms'
                 ' | >= 10 000 req/s, p99 < 20 ms | %d-byte reply; errors %d |'
                 % (duration, len(wrk), mmm(g_rps, '%.0f'), mmm(g50, '%.1f'), mmm(g99, '%.1f'),
                    wrk[0]['bytes'], errs))
    table.append('| the same against a trivial libmicrohttpd server (ceiling) | %s req/s, p99 %s ms'
                 ' | | gppd / ceiling = %s |' % (mmm(h_rps, '%.0f'), mmm(h99, '%.1f'),
                                                 mmm(ratio, '%.2f')))
for r in rows:
    if r['section'] == 'ingest':
        x = r['result']
        table.append('| metric ingest, %d simulated workers, %d-point batches, %d in flight | %.0f points/s'
                     ' | >= 100 000 points/s | %d points in %.2f s; stored: %d (HTTP), %d (sqlite3) |'
                     % (x['workers'], x['batch'], x['window'], x['points_per_s'], x['points_sent'],
                        x['seconds'], x['points_stored'], r['sqlite_count']))
    if r['section'] == 'ingest1':
        x = r['result']
        table.append('| metric ingest, 1 simulated worker (one job, %d names) | %.0f points/s | | %d points'
                     ' stored in %.2f s |' % (x['names'], x['points_per_s'], x['points_stored'], x['seconds']))
    if r['section'] == 'query':
        x = r['result']
        job_points = [s for s in rows if s['section'] == 'ingest1'][0]['result']['points_stored']
        table.append('| GET .../metrics?%s, one job of %d points (%d in the database) | p50 %.1f ms, p95 %.1f ms'
                     ' | p95 <= 20 ms | %d points read, %d returned, %d bytes%s |'
                     % (x['query'], job_points, r['db_points'], x['p50_ms'], x['p95_ms'], x['scanned'],
                        x['points'], x['bytes'],
                        '; %d series cut at `limit`' % x['truncated_series'] if x['truncated_series'] else ''))
    if r['section'] == 'latency':
        x = r['result']
        lg = r['from_log_ms']
        table.append('| queued stage -> idle worker (%d jobs, one at a time) | median %.1f ms, p95 %.1f ms'
                     ' | <= 5 ms | from the "job submitted" log line (after the commit that queued it, ms'
                     ' resolution) to the assign frame; from the POST (includes that commit): median %.2f,'
                     ' p95 %.2f ms; from the 201 reply: median %.2f, p95 %.2f ms |'
                     % (x['jobs'], lg['p50'], lg['p95'], x['from_post_ms']['p50'], x['from_post_ms']['p95'],
                        x['from_reply_ms']['p50'], x['from_reply_ms']['p95']))
res['table'] = table
with open(out, 'w') as f:
    json.dump(res, f, indent=1)
print('\n'.join(table))
print('\n%d CPUs, load average before %s, after %s; buildtype %s; JSON: %s'
      % (os.cpu_count(), load_before, load_after, buildtype, out))
EOF
