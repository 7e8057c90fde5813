#!/bin/bash
# The ONE prepared script for the GPU machine (issue 8), run from the repo
# root there with the pack made here by tests/gpu/pack.sh:
#
#   run tool: carry [".devcarry"], timeout_s 600,
#             command "bash tests/gpu/device-run.sh"
#
# Unpacks .devcarry/gppdev.tar.xz to /tmp/gppdev (binaries + the libraries
# the machine lacks), finds the machine's cuBLAS, prints nvidia-smi, runs
# the gpu suite's executables directly (no meson there), the lenet5 loss
# curve (part of test_cuda_net), tests/gpu/e2e.py (gppd, a CUDA worker and
# a small "device": "gpu" job over HTTP), `gpp-worker bench --device cuda` with per
# layer times, and tests/bench/engine_vs_torch.sh --device cuda against the
# machine's python3 torch.  Logs under $OUT (at most 8 files come back):
#   device-run.log  everything, in order     summary.txt  one line per step
#   tests.log  each gpu-suite executable's output   sanitizer.log  a failed
#   test again under compute-sanitizer   bench.log, bench_raw.txt
# Every step has a timeout and the whole run stays under 560 s (the bench is
# skipped when less than 120 s are left); it normally takes about 5 minutes.
# Env: BENCH=0 skips the benchmark; PAIRS, CONFIGS pass to engine_vs_torch.sh.
set -u
root=$(pwd)
out=${OUT:-/tmp/gppdev-out}
mkdir -p "$out"
exec > >(tee -a "$out/device-run.log") 2>&1
summary=$out/summary.txt
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start ))s; }

work=/tmp/gppdev
logs=/tmp/gppdev-logs
rm -rf "$work" "$logs"
mkdir -p "$work" "$logs"
if ! tar -xJf "$root/.devcarry/gppdev.tar.xz" -C "$work"; then
    note "FATAL: cannot unpack .devcarry/gppdev.tar.xz (run tests/gpu/pack.sh, carry .devcarry)"
    exit 1
fi
note "pack: commit $(cat "$work/COMMIT" 2>/dev/null) ($(wc -l < "$work/STATUS" 2>/dev/null) files changed)"

# cuBLAS 13: the toolkit's, else the pip packages of the torch venv
cublas=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/libcublas.so.13" ] && { cublas=$d; break; }
done
if [ -z "$cublas" ]; then
    f=$(find /opt /usr/local /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)
    [ -n "$f" ] && cublas=$(dirname "$f")
fi
note "cublas: ${cublas:-NOT FOUND}"
# cuDNN 9 (convolutions; without it they run as im2col + cuBLAS): the
# toolkit's, else the torch venv's nvidia-cudnn package
cudnn=""
for f in /usr/local/cuda/lib/libcudnn.so.9 /usr/local/cuda/lib64/libcudnn.so.9 \
         $(find /opt /usr/local /usr/lib -name 'libcudnn.so.9' 2>/dev/null); do
    [ -e "$f" ] && [ -e "$(dirname "$f")/libcudnn_cnn.so.9" ] && { cudnn=$(dirname "$f"); break; }
done
note "cudnn: ${cudnn:-NOT FOUND}"
export LD_LIBRARY_PATH=$work/lib${cublas:+:$cublas}${cudnn:+:$cudnn}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export GPP_FMNIST_DIR=$work/data/fashion-mnist
unset GPP_CUDA_TF32

echo "== machine"
nvidia-smi || note "nvidia-smi failed"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
(command -v nvcc && nvcc --version | tail -2) || true
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' || true
echo "== libraries"
ldd "$work/bin/test_cuda_layers" | grep -e 'not found' -e openblas -e cjson || true

echo "== gpu suite ($(elapsed))"
failed=""
for t in fakedev:40 cuda_layers:90 cuda_net:150 cuda_gpp:90 cuda_layers_im2col:90 \
         cuda_net_im2col:150 cuda_layers_cudnn:90 cuda_net_cudnn:150; do
    lim=${t#*:}
    t=${t%:*}
    case $t in   # *_im2col / *_cudnn: the same test with GPP_CUDA_CONV=im2col / cudnn
    *_im2col|*_cudnn) GPP_CUDA_CONV=${t##*_} timeout "$lim" "$work/bin/test_${t%_*}" > "$logs/$t.log" 2>&1 ;;
    *) timeout "$lim" "$work/bin/test_$t" > "$logs/$t.log" 2>&1 ;;
    esac
    rc=$?
    { echo "==== test_$t rc=$rc"; cat "$logs/$t.log"; } >> "$out/tests.log"
    case $rc in
    0) res=PASS ;; 77) res=SKIP ;; 124) res=TIMEOUT ;; *) res="FAIL rc=$rc" ;;
    esac
    [ "$res" = PASS ] || failed="$failed $t"
    note "test_$t: $res ($(elapsed)) $(grep -c '\[       OK \]' "$logs/$t.log") ok, $(grep -c '\[  FAILED  \] test' "$logs/$t.log") failed"
    grep -e '^SKIP' -e 'FAILED' -e 'differ' -e 'Failure' "$logs/$t.log" | head -20
done
echo "== lenet5 loss curve (step cpu cuda)"
grep -e '^lenet5_' "$logs/cuda_net.log" | tee -a "$summary" | tail -12
for v in im2col cudnn; do
    grep -e '^lenet5_test' "$logs/cuda_net_$v.log" | sed "s/^/$v: /" | tee -a "$summary"
done
grep -e '^gpp_' "$logs/cuda_gpp.log" | tee -a "$summary"
grep -e '^# oom' "$logs/cuda_net.log" | tee -a "$summary"

echo "== e2e: gppd + gpp-worker --device cuda:0 + a job over HTTP ($(elapsed))"
timeout 200 python3 "$root/tests/gpu/e2e.py" "$work/bin" "$GPP_FMNIST_DIR" --device cuda:0 \
    --timeout 180 > "$logs/e2e.log" 2>&1
note "e2e: rc=$? ($(elapsed))"
grep '^e2e:' "$logs/e2e.log" | tee -a "$summary"
{ echo "==== e2e"; cat "$logs/e2e.log"; } >> "$out/tests.log"

# a failed CUDA test again under compute-sanitizer (memcheck), where the
# machine's runtime lets it read the device (Firecracker)
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
for t in $failed; do
    [ "$t" = fakedev ] && continue
    [ -n "$san" ] || { note "compute-sanitizer: not found"; break; }
    base=$t
    case $t in *_im2col|*_cudnn) export GPP_CUDA_CONV=${t##*_} base=${t%_*} ;; *) unset GPP_CUDA_CONV ;; esac
    timeout 90 "$san" --tool memcheck --print-limit 20 "$work/bin/test_$base" > "$logs/san_$t.log" 2>&1
    rc=$?
    unset GPP_CUDA_CONV
    note "sanitizer test_$t: rc=$rc ($(elapsed))"
    { echo "==== compute-sanitizer test_$t"; cat "$logs/san_$t.log"; } >> "$out/sanitizer.log"
    grep -m 12 -e 'Invalid' -e 'ERROR SUMMARY' -e 'at .* in ' -e 'by thread' "$logs/san_$t.log" | tee -a "$summary"
done

left=$(( ${BUDGET:-540} - ($(date +%s) - t_start) ))   # the run tool's limit is 600 s
if [ "${BENCH:-1}" != 0 ] && [ "$left" -lt 120 ]; then
    note "bench: skipped, only ${left}s left"
elif [ "${BENCH:-1}" != 0 ]; then
    echo "== bench ($(elapsed))"
    {
        echo "# gpp-worker bench --device cuda, per-layer times (inception-base, batch 256)"
        timeout 120 "$work/bin/gpp-worker" bench --device cuda --model inception-base \
            --input 3x32x32 --batch 256 --steps 20 --warmup 5
        for m in "lenet5 1x28x28" "vgg-small 3x32x32" "inception-base 3x32x32"; do
            set -- $m
            for b in 64 256; do
                for tf in 0 1; do
                    r=$(GPP_CUDA_TF32=$tf timeout 60 "$work/bin/gpp-worker" bench --device cuda \
                        --model "$1" --input "$2" --batch "$b" --steps 50 --warmup 5)
                    if [ -n "$r" ]; then
                        echo "$r" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("engine %-15s batch %4d tf32 %s: train %8.0f img/s (metrics read each step: waiting %8.0f, one step late %8.0f)  infer %8.0f img/s  conv %s" % (d["model"], d["batch"], sys.argv[1], d["train_images_per_s"], d.get("train_sync_metrics_images_per_s", 0), d.get("train_async_metrics_images_per_s", 0), d["infer_images_per_s"], d.get("conv")))' "$tf"
                    else
                        echo "engine $1 batch $b tf32 $tf: FAILED"
                    fi
                done
            done
        done
        echo "# engine_vs_torch --device cuda (engine fp32; torch eager default = TF32 convs, and --no-tf32)"
        left=$(( ${BUDGET:-540} + 20 - ($(date +%s) - t_start) ))
        RAW=$out/bench_raw.txt PY=python3 PAIRS=${PAIRS:-2} timeout "$left" sh "$root/tests/bench/engine_vs_torch.sh" --device cuda "$work"
    } > "$out/bench.log" 2>&1
    note "bench: rc=$? ($(elapsed))"
    grep -e '^engine ' -e 'train' -e 'infer' "$out/bench.log" | grep -v '^{' | tee -a "$summary" | head -40
fi
note "done in $(elapsed)"
