#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and fuzz each one.
#   tests/fuzz/run-fuzzers.sh [SECONDS_PER_TARGET] [TARGET...]
# Working corpora live in $B/corpus/NAME (seeded from tests/fuzz/corpus/NAME);
# a crash input is written to $B/ and the script exits non-zero.  Prints one
# summary line per target.  B is $FUZZ_BUILD_DIR, else build-fuzz (in the
# source tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${FUZZ_BUILD_DIR:-build-fuzz}
secs=${1:-300}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(sed -n "s/^  '\([a-z0-9_-]*\)': .*/\1/p" tests/fuzz/meson.build))
if [ -f "$B/build.ninja" ]; then
  CC=clang meson setup --reconfigure "$B" >/dev/null
else
  CC=clang meson setup "$B" -Dfuzz=true -Dcuda=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
status=0
for t in "${targets[@]}"; do
  ninja -C "$B" -j2 "tests/fuzz/fuzz_$t" >/dev/null
  mkdir -p "$B/corpus/$t"
  log="$B/fuzz_$t.log"
  if ! "$B/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
       -artifact_prefix="$B/crash-$t-" \
       "$B/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    status=1; echo "fuzz_$t: FOUND A CRASH, see $log"; tail -30 "$log"; continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1)
  echo "fuzz_$t: ${secs}s, $runs executions, $cov, $ft, corpus $(ls "$B/corpus/$t" | wc -l) inputs, no crash"
done
exit $status
