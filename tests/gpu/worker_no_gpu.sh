#!/bin/sh
# gpp-worker asked for a GPU that does not work says so and exits non-zero:
# `bench --device cuda:99`, `run JOB --device cuda:99` and the daemon mode `--connect ... --device
# cuda:99` (no machine has a 100th GPU; a machine without a GPU or driver,
# or a cpu-only build, fails the same way).  The message names the reason:
# "no CUDA device: ..." in a CUDA build, "not available in this build" in a
# cpu-only one.  Also `--device cuda` where `nvidia-smi -L` lists no GPU.
#   tests/gpu/worker_no_gpu.sh GPP_WORKER
set -u
worker=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fails=0

expect_fail() {   # what, then the command
    what=$1
    shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "FAIL $what: exit 0"
        fails=$((fails + 1))
    elif grep -q -e 'no CUDA device' -e 'not available in this build' "$tmp/err"; then
        echo "ok   $what: exit $rc: $(head -1 "$tmp/err")"
    else
        echo "FAIL $what: exit $rc without a clear message:"
        cat "$tmp/err"
        fails=$((fails + 1))
    fi
}

expect_fail "bench --device cuda:99" \
    "$worker" bench --model lenet5 --batch 4 --steps 1 --device cuda:99
echo '{"dataset": "fashion-mnist", "model": "lenet5", "data": {"train_limit": 200, "test_limit": 100}}' \
    > "$tmp/job.json"
expect_fail "run --device cuda:99" \
    "$worker" run "$tmp/job.json" --out "$tmp/run" --device cuda:99
echo token > "$tmp/token"
expect_fail "daemon --device cuda:99" \
    "$worker" --connect 127.0.0.1:9 --token-file "$tmp/token" --cache-dir "$tmp/cache" \
    --device cuda:99
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    expect_fail "bench --device cuda (no GPU here)" \
        "$worker" bench --model lenet5 --batch 4 --steps 1 --device cuda
    expect_fail "daemon --device cuda (no GPU here)" \
        "$worker" --connect 127.0.0.1:9 --token-file "$tmp/token" --cache-dir "$tmp/cache" \
        --device cuda
fi
# the cpu still works
if ! "$worker" bench --model lenet5 --batch 4 --steps 1 --warmup 0 --device cpu >/dev/null; then
    echo "FAIL bench --device cpu"
    fails=$((fails + 1))
fi
[ "$fails" -eq 0 ]
