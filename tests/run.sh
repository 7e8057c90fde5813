#!/usr/bin/env bash
# Build gppd and run every suite, then build again with AddressSanitizer and
# UndefinedBehaviorSanitizer and run the unit and integration suites there.
# Ends with one line "N passed, N failed[, N skipped]"; exits non-zero when
# anything failed.  Suite 'bench' is never run here (see tests/bench/).
#
#   tests/run.sh              everything
#   tests/run.sh --no-deps    skip deploy/install-deps.sh
#   tests/run.sh --no-asan    skip the sanitizer build
#   GPP_SUITES="unit fuzz-replay" tests/run.sh   only these suites
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

do_deps=1 do_asan=1
for a in "$@"; do
  case "$a" in
    --no-deps) do_deps=0 ;;
    --no-asan) do_asan=0 ;;
    *) echo "run.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

[ -x /usr/local/cuda/bin/nvcc ] && export PATH="$PATH:/usr/local/cuda/bin"
jobs=$(nproc 2>/dev/null || echo 2)

passed=0 failed=0 skipped=0
failures=()

note_fail() { failed=$((failed + 1)); failures+=("$1"); }

if [ "$do_deps" = 1 ]; then
  deploy/install-deps.sh || note_fail "install-deps"
fi

# configure DIR [meson options...]: a fresh setup, or a reconfigure when DIR exists
configure() {
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then
    meson setup --reconfigure "$dir" "$@" >"$root/$dir.setup.log" 2>&1
  else
    meson setup "$dir" "$@" >"$root/$dir.setup.log" 2>&1
  fi
}

# run_tests DIR LABEL meson-test-args...: runs, then adds the results of
# DIR/meson-logs/testlog.json to the totals.
run_tests() {
  local dir=$1 label=$2; shift 2
  echo "== $label: meson test $*"
  meson test -C "$dir" --print-errorlogs --num-processes "$jobs" "$@"
  local log="$dir/meson-logs/testlog.json"
  [ -f "$log" ] || { note_fail "$label: no test log"; return; }
  local ok fail skip
  ok=$(grep -c '"result": "OK"' "$log")
  skip=$(grep -c '"result": "SKIP"' "$log")
  fail=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
  passed=$((passed + ok)); skipped=$((skipped + skip))
  if [ "$fail" -gt 0 ]; then
    failed=$((failed + fail))
    while IFS= read -r n; do failures+=("$label: $n"); done < <(
      grep -E '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log" |
      sed -n 's/.*"name": "\([^"]*\)".*/\1/p')
  fi
}

suite_args=()
if [ -n "${GPP_SUITES:-}" ]; then
  for s in $GPP_SUITES; do suite_args+=(--suite "$s"); done
else
  suite_args=(--no-suite bench)
fi

# 1. the normal build, every suite but bench
echo "== configure build/"
if configure build && ninja -C build >build.ninja.log 2>&1; then
  run_tests build "build" "${suite_args[@]}"
else
  cat build.setup.log build.ninja.log 2>/dev/null | tail -60
  note_fail "build: configure or compile"
fi

# 2. AddressSanitizer + UndefinedBehaviorSanitizer, unit and integration
if [ "$do_asan" = 1 ]; then
  echo "== configure build-asan/ (address,undefined)"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
  if configure build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled &&
     ninja -C build-asan >build-asan.ninja.log 2>&1; then
    asan_suites=(--suite unit --suite integration)
    if [ -n "${GPP_SUITES:-}" ]; then
      asan_suites=()
      for s in $GPP_SUITES; do
        case "$s" in unit|integration) asan_suites+=(--suite "$s") ;; esac
      done
    fi
    [ ${#asan_suites[@]} -gt 0 ] && run_tests build-asan "asan" "${asan_suites[@]}"
  else
    cat build-asan.setup.log build-asan.ninja.log 2>/dev/null | tail -60
    note_fail "build-asan: configure or compile"
  fi
fi

if [ ${#failures[@]} -gt 0 ]; then
  echo "== failed:"
  printf '  %s\n' "${failures[@]}"
fi
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
