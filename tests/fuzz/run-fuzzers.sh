#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and fuzz each one.
#   tests/fuzz/run-fuzzers.sh [SECONDS_PER_TARGET] [TARGET...]
# Working corpora live in build-fuzz/corpus/NAME (seeded from
# tests/fuzz/corpus/NAME); a crash input is written to build-fuzz/ and the
# script exits non-zero.  Prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-300}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(sed -n "s/^  '\([a-z0-9_-]*\)': .*/\1/p" tests/fuzz/meson.build))
if [ -f build-fuzz/build.ninja ]; then
  CC=clang meson setup --reconfigure build-fuzz >/dev/null
else
  CC=clang meson setup build-fuzz -Dfuzz=true -Dcuda=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
status=0
for t in "${targets[@]}"; do
  ninja -C build-fuzz "tests/fuzz/fuzz_$t" >/dev/null
  mkdir -p "build-fuzz/corpus/$t"
  log="build-fuzz/fuzz_$t.log"
  if ! build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$secs" -print_final_stats=1 \
       -artifact_prefix="build-fuzz/crash-$t-" \
       "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    status=1; echo "fuzz_$t: FOUND A CRASH, see $log"; tail -30 "$log"; continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  echo "fuzz_$t: ${secs}s, $runs executions, $cov, corpus $(ls "build-fuzz/corpus/$t" | wc -l) inputs, no crash"
done
exit $status
