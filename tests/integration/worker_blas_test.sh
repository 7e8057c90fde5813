#!/usr/bin/env bash
# gpp-worker runs OpenBLAS's kernels for this CPU: `gpp-worker version`
# names them.  The environment's OPENBLAS_CORETYPE, when set, is what runs
# (never overridden); when unset on an AVX-512 (AVX2) CPU, OpenBLAS's generic
# Prescott fallback is replaced by SkylakeX (Haswell) through one re-exec,
# same pid.  The environment is left as it is.
#   worker_blas_test.sh PATH/TO/gpp-worker
set -euo pipefail
worker=$1
out=$("$worker" version)
echo "$out"
core=$(sed -n 's/^blas: OpenBLAS, \(.*\) kernels$/\1/p' <<<"$out")
[ -n "$core" ] || { echo "FAIL: no 'blas:' line"; exit 1; }
lc() { tr '[:upper:]' '[:lower:]' <<<"$1"; }
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  [ "$(lc "$core")" = "$(lc "$OPENBLAS_CORETYPE")" ] ||
    { echo "FAIL: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE but $core kernels run"; exit 1; }
  echo "ok: the environment's OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE is what runs"
else
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
  if has avx512f avx512vl avx512bw avx512dq avx512cd || has avx2 fma; then
    [ "$(lc "$core")" != prescott ] ||
      { echo "FAIL: an AVX2/AVX-512 CPU runs the generic Prescott kernels"; exit 1; }
    echo "ok: $core kernels on an AVX2/AVX-512 CPU"
  else
    echo "ok: no AVX2 here; $core kernels as OpenBLAS chose"
  fi
fi
# the restart keeps arguments, exit status and output: an unknown command
# still fails with 2 and its message
set +e
msg=$("$worker" no-such-command 2>&1); rc=$?
set -e
[ $rc -eq 2 ] || { echo "FAIL: unknown command exit $rc, want 2"; exit 1; }
grep -q 'unknown command "no-such-command"' <<<"$msg" || { echo "FAIL: $msg"; exit 1; }
# the restart is an exec, not a child: the process started is the one
# running, with its arguments, and (when the restart happened) the core named
# in its own environment
"$worker" bench --model lenet5 --batch 16 --steps 100000 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
kill -0 $pid
[ "$(tr '\0' ' ' </proc/$pid/cmdline)" = "$worker bench --model lenet5 --batch 16 --steps 100000 " ] ||
  { echo "FAIL: pid $pid runs $(tr '\0' ' ' </proc/$pid/cmdline)"; exit 1; }
[ "$(pgrep -P $pid | wc -l)" -eq 0 ] || { echo "FAIL: pid $pid has children"; exit 1; }
# what OpenBLAS picks by itself in this environment, asked through ctypes
own=$(/usr/bin/python3 -c '
import ctypes, ctypes.util
lib = ctypes.CDLL(ctypes.util.find_library("openblas") or "libopenblas.so.0")
lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())')
env_core=$(tr '\0' '\n' </proc/$pid/environ | sed -n 's/^OPENBLAS_CORETYPE=//p')
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ "$(lc "$own")" = prescott ] && [ "$(lc "$core")" != prescott ]; then
  [ "$env_core" = "$core" ] ||
    { echo "FAIL: OpenBLAS alone picks $own, the worker runs $core, its environment says '$env_core'"; exit 1; }
  echo "ok: OpenBLAS alone picks $own; pid $pid restarted itself with OPENBLAS_CORETYPE=$core"
else
  [ "$env_core" = "${OPENBLAS_CORETYPE:-}" ] ||
    { echo "FAIL: no restart was due, but OPENBLAS_CORETYPE became '$env_core'"; exit 1; }
  [ "$(lc "$own")" = "$(lc "$core")" ] || { echo "FAIL: OpenBLAS picks $own, the worker runs $core"; exit 1; }
  echo "ok: OpenBLAS picks $own itself, no restart"
fi
kill $pid
echo "ok"
