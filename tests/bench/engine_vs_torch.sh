#!/bin/sh
# The engine against PyTorch on the same machine, in one run (BENCHMARKS.md):
# for each configuration, PAIRS rounds of
#   gpp-worker bench  |  torch_peer.py  |  torch_peer.py with GLIBC_TUNABLES
# alternating, after warm-up steps; the peer's figure of a round is the
# faster of its two variants.  Prints per configuration the engine's and the
# peer's median images/s (min..max), the median ratio (min..max) for
# training and inference, and both peak RSS figures.
#
#   tests/bench/engine_vs_torch.sh [--device cpu|cuda[:N]] [BUILD_DIR]
#   env: PAIRS (5; 3 on cuda), THREADS (2), CONFIGS ("model:batch:CxHxW:steps ..."),
#        PY (/usr/bin/python3: the python with torch; on the GPU machine python3),
#        RAW (a file that keeps the raw result lines)
# --device cuda: both sides on the GPU (torch_peer.py --device cuda, with a
# torch.cuda.synchronize() around its timings; the engine synchronises at the
# end of its timed loops); the peer's second variant is torch with TF32 off
# (strict FP32 like the engine) instead of the malloc tunables, and the
# peer's figure of a round is the faster of the two.  Default configs on
# cuda: lenet5, vgg-small and inception-base at batch 64 and 256.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
device=cpu
if [ "${1:-}" = "--device" ]; then
    device=$2
    shift 2
fi
build=${1:-$here/../../build}
worker=$build/worker/gpp-worker
py=${PY:-/usr/bin/python3}
threads=${THREADS:-2}
case $device in
cuda*)
    pairs=${PAIRS:-3}
    configs=${CONFIGS:-"lenet5:64:1x28x28:200 lenet5:256:1x28x28:100 vgg-small:64:3x32x32:100 vgg-small:256:3x32x32:40 inception-base:64:3x32x32:60 inception-base:256:3x32x32:25"}
    ;;
*)
    pairs=${PAIRS:-5}
    configs=${CONFIGS:-"lenet5:64:1x28x28:100 lenet5:256:1x28x28:30 vgg-small:64:1x28x28:20 vgg-small:256:1x28x28:6"}
    ;;
esac
tunables='glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736:glibc.malloc.top_pad=67108864'

[ -x "$worker" ] || { echo "engine_vs_torch: no $worker (build first)" >&2; exit 1; }
if [ "$device" != cpu ] && ! "$worker" bench --model lenet5 --batch 2 --steps 1 --warmup 0 \
        --device "$device" > /dev/null; then
    echo "engine_vs_torch: --device $device does not work here" >&2
    exit 1
fi
$py -c 'import torch' 2>/dev/null || { echo "engine_vs_torch: $py has no torch" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
res=${RAW:-$tmp/results}   # RAW=FILE keeps every run's JSON line (a cut run keeps what it had)
: > "$res"
# Both sides on the same OpenBLAS kernels: gpp-worker replaces OpenBLAS's
# generic fallback on CPUs it does not know (worker/nn/blas_core.c); torch's
# BLAS (Debian's is OpenBLAS, for its linear layers) gets the same core
# unless the environment names one for both.
core=$("$worker" version | sed -n 's/^blas: OpenBLAS, \(.*\) kernels$/\1/p')
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -n "$core" ]; then
    py="env OPENBLAS_CORETYPE=$core $py"
fi
echo "engine_vs_torch: device $device, $(nproc) cpus, threads $threads, $pairs pairs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), OpenBLAS ${core:-?} kernels (both sides)"
for cfg in $configs; do
    model=$(echo "$cfg" | cut -d: -f1)
    batch=$(echo "$cfg" | cut -d: -f2)
    input=$(echo "$cfg" | cut -d: -f3)
    steps=$(echo "$cfg" | cut -d: -f4)
    desc=$tmp/$model-$input.json
    "$worker" zoo "$model" --input "$input" > "$desc"
    i=0
    while [ "$i" -lt "$pairs" ]; do
        i=$((i + 1))
        printf '%s engine %s\n' "$cfg" "$("$worker" bench --model "$model" --batch "$batch" \
            --steps "$steps" --warmup 3 --threads "$threads" --input "$input" \
            --device "$device")" >> "$res"
        printf '%s torch %s\n' "$cfg" "$($py "$here/torch_peer.py" --desc "$desc" \
            --batch "$batch" --steps "$steps" --warmup 3 --threads "$threads" \
            --device "$device")" >> "$res"
        case $device in
        cuda*)
            printf '%s torch-tunables %s\n' "$cfg" "$($py "$here/torch_peer.py" \
                --desc "$desc" --batch "$batch" --steps "$steps" --warmup 3 \
                --threads "$threads" --device "$device" --no-tf32)" >> "$res" ;;
        *)
            printf '%s torch-tunables %s\n' "$cfg" "$(GLIBC_TUNABLES=$tunables $py "$here/torch_peer.py" \
                --desc "$desc" --batch "$batch" --steps "$steps" --warmup 3 --threads "$threads")" >> "$res" ;;
        esac
    done
done
$py - "$res" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    cfg, who, js = line.split(" ", 2)
    rows.setdefault(cfg, {}).setdefault(who, []).append(json.loads(js))
def fmt(v):
    return "%.0f (%.0f..%.0f)" % (statistics.median(v), min(v), max(v))
def rfmt(v):
    return "%.2fx (%.2f..%.2f)" % (statistics.median(v), min(v), max(v))
print("%-28s %-6s %-26s %-26s %-22s" % ("config", "", "engine img/s", "torch img/s (best)", "ratio engine/torch"))
for cfg, d in rows.items():
    e, t, tt = d["engine"], d["torch"], d["torch-tunables"]
    for key, label in (("train_images_per_s", "train"), ("infer_images_per_s", "infer")):
        ev = [x[key] for x in e]
        pv = [max(a[key], b[key]) for a, b in zip(t, tt)]
        rv = [a / b for a, b in zip(ev, pv)]
        print("%-28s %-6s %-26s %-26s %-22s" % (cfg, label, fmt(ev), fmt(pv), rfmt(rv)))
    er = statistics.median(x["peak_rss_kb"] for x in e)
    pr = statistics.median(min(a["peak_rss_kb"], b["peak_rss_kb"]) for a, b in zip(t, tt))
    print("%-28s %-6s %-26s %-26s %-22s" % (cfg, "rss", "%.0f kB" % er, "%.0f kB" % pr, "%.2fx" % (er / pr)))
PY
