#!/usr/bin/env bash
# Grow from a deliberately small start (bench only, not a registered test).
#
#   tests/bench/grow_table.sh [--out DIR] [--threads N] [--scale S]
#                             [--extra JSON] [--render-only]
#
# The start: the zoo's inception-base cut to its stem and first Inception
# module (stem, inc1, global average pooling, fc), every width times SCALE
# (--scale, default 0.5: stem 16, inc1 16+24+8+8 = 56 channels). The job grows it while it
# pays (grow.enabled; each new module has inc1's widths, METHOD.md 2), then
# pushes and prunes as usual, with --baselines=scratch (the size-first
# architecture trained from scratch). Then, each trained from scratch for the GPP job's whole
# epoch budget (train + grow + push + fine-tune epochs, as the scratch
# baseline):
#   - the small start itself (did growing pay, or only the extra epochs?);
#   - a plain VGG-style net (conv c, c, pool, 2c, 2c, pool, 4c, gap, fc, with
#     batch norm) whose width c gives the parameter count closest to GPP's
#     size-first model.
# Prints a markdown table: every grown net (a rolled-back module shown as
# tried), GPP accuracy-first and size-first, the baselines, the two
# comparison nets.
# --extra JSON is merged into every job (e.g. '{"data":{"train_limit":5000}}'
# for a quick look). Environment: BUILD (default $ROOT/build), PY.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PY=${PY:-/usr/bin/python3}
OUT=""
THREADS=2
EXTRA='{}'
SCALE=0.5
RENDER_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) OUT=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --extra) EXTRA=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --render-only) RENDER_ONLY=1; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/grow-table.XXXXXX)
mkdir -p "$OUT"
W=$BUILD/worker/gpp-worker

run() { # name job
    local name=$1 job=$2
    if [ -f "$OUT/$name/summary.json" ] && grep -q '"elapsed_s"' "$OUT/$name/summary.json" &&
        [ -f "$OUT/$name.done" ]; then
        echo "$name: already done" >&2
        return
    fi
    echo "running $name -> $OUT/$name" >&2
    shift 2
    local resume=()
    [ -d "$OUT/$name" ] && resume=(--resume)
    "$W" run "$job" --out "$OUT/$name" --threads "$THREADS" "${resume[@]}" "$@" \
        > "$OUT/$name.log" 2>&1 ||
        { echo "$name failed, see $OUT/$name.log" >&2; tail -20 "$OUT/$name.log" >&2; exit 1; }
    touch "$OUT/$name.done"
}

if [ "$RENDER_ONLY" = 0 ]; then
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$ROOT" -Dcuda=disabled >&2
    ninja -C "$BUILD" worker/gpp-worker >&2
    "$W" zoo inception-base > "$OUT/inception-base.json"
    "$PY" - "$OUT" "$EXTRA" "$SCALE" <<'EOF'
import json, sys
out, extra, scale = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
full = json.load(open(f"{out}/inception-base.json"))
layers = []
for l in full["layers"]:
    if l["type"] == "conv":
        l["out"] = max(1, round(l["out"] * scale))
    layers.append(l)
    if l["name"] == "inc1_concat":
        break
layers += [{"name": "gap", "type": "global-avgpool", "inputs": ["inc1_concat"]},
           {"name": "fc", "type": "fc", "inputs": ["gap"], "out": full["classes"]}]
start = {"input": full["input"], "classes": full["classes"], "layers": layers}
json.dump(start, open(f"{out}/start.json", "w"))

def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
    return a

job = merge({"name": "grow from a small start", "dataset": "fashion-mnist", "model": start,
             "grow": {"enabled": True}}, extra)
json.dump(job, open(f"{out}/gpp.json", "w"))
EOF
    run gpp "$OUT/gpp.json" --baselines=scratch
    "$PY" - "$OUT" "$EXTRA" <<'EOF'
import json, sys
out, extra = sys.argv[1], json.loads(sys.argv[2])
g = json.load(open(f"{out}/gpp/summary.json"))
job = json.load(open(f"{out}/gpp.json"))
budget = g["baselines"]["scratch"]["budget_epochs"]
target = g["size_first"]["params"]
K = json.load(open(f"{out}/start.json"))["classes"]

def plain(c):
    L, cin = [], 1
    for i, w in enumerate((c, c, "pool", 2 * c, 2 * c, "pool", 4 * c)):
        if w == "pool":
            L.append({"name": f"pool{i}", "type": "maxpool", "k": 2})
            continue
        L += [{"name": f"conv{i}", "type": "conv", "out": w, "k": 3, "pad": 1, "bias": False},
              {"name": f"conv{i}_bn", "type": "bn"}, {"name": f"conv{i}_relu", "type": "relu"}]
    L += [{"name": "gap", "type": "global-avgpool"}, {"name": "fc", "type": "fc", "out": K}]
    return L

def count(c):
    p, cin = 0, 1
    for w in (c, c, 2 * c, 2 * c, 4 * c):
        p += cin * w * 9 + 2 * w
        cin = w
    return p + cin * K + K

c = min(range(1, 257), key=lambda c: abs(count(c) - target))
base = {k: v for k, v in job.items() if k not in ("model", "grow", "name")}
base.setdefault("train", {})["epochs"] = budget
base["iterations"] = 0
s = dict(base, name="the small start, whole budget", model=json.load(open(f"{out}/start.json")))
json.dump(s, open(f"{out}/start-long.json", "w"))
p = dict(base, name=f"plain conv net c={c}", model=plain(c))
json.dump(p, open(f"{out}/plain.json", "w"))
json.dump({"budget": budget, "c": c, "plain_params": count(c), "target": target},
          open(f"{out}/comparison.json", "w"))
EOF
    run start-long "$OUT/start-long.json"
    run plain "$OUT/plain.json"
fi

"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
g = json.load(open(f"{out}/gpp/summary.json"))
cmp = json.load(open(f"{out}/comparison.json"))
sl = json.load(open(f"{out}/start-long/summary.json"))
pl = json.load(open(f"{out}/plain/summary.json"))
job = json.load(open(f"{out}/gpp.json"))
ep = job.get("train", {}).get("epochs", 2)
gep = job.get("grow", {}).get("epochs", 1)

def modules(s):
    return 1 + sum(1 for l in s.get("layers", []) if l["name"].startswith("grow") and
                   l["name"].endswith("_b1"))

st = json.load(open(f"{out}/start.json"))["layers"]
stem = next(l["out"] for l in st if l["name"] == "stem")
inc = sum(l["out"] for l in st if l["name"] in ("inc1_b1", "inc1_b2b", "inc1_b3c", "inc1_b4"))
print(f"Start: inception-base cut to its stem and first Inception module, widths scaled to stem "
      f"{stem}, inc1 {inc} channels at 14×14, then global average pooling and fc. Job: `"
      + json.dumps({k: v for k, v in job.items() if k != "model"}, separators=(",", ":"))
      + "` with that net as `model`.\n")
print("| model | Inception modules | params | FLOPs | epochs | val % | test % |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")

def line(name, s, epochs, mods=None):
    m = modules(s) if mods is None else mods
    print(f"| {name} | {m} | {s['params']:,} | {s['flops']:,} | {epochs} | "
          f"{100 * s['val_accuracy']:.2f} | {100 * s['test_accuracy']:.2f} |")

done = ep
for s in g["stages"]:
    if s["stage"] == "train":
        line("start, trained", s, done)
    elif s["stage"] == "grow":
        done += gep
        if s.get("grow_kept"):
            line(f"grown: module {s['grow_modules'] + 1} kept", s, done)
        else:
            print(f"| grown: module {modules(s) + 1} tried, rolled back (val "
                  f"{100 * s.get('grown_val_accuracy', 0):.2f}, needed +"
                  f"{100 * job.get('grow', {}).get('min_gain', 0.002):.1f}) | - | - | - | {done} | - | - |")
af, sf = g["accuracy_first"], g["size_first"]
line("GPP accuracy-first (pruned grown net)", af, "-")
line("GPP size-first (pruned grown net)", sf, "-")
for k, label in (("l1", "L1-filter, same widths"), ("random", "random, same widths"),
                 ("scratch", "GPP's final architecture from scratch")):
    s = g.get("baselines", {}).get(k)
    if s:
        line(label, s, s.get("budget_epochs", "-"))
line("the small start, whole budget", sl["baseline"], cmp["budget"], 1)
print(f"| plain conv net c={cmp['c']} ({cmp['c']}-{cmp['c']}-pool-{2 * cmp['c']}-{2 * cmp['c']}"
      f"-pool-{4 * cmp['c']}, gap, fc), whole budget | 0 | {pl['baseline']['params']:,} | "
      f"{pl['baseline']['flops']:,} | {cmp['budget']} | {100 * pl['baseline']['val_accuracy']:.2f} | "
      f"{100 * pl['baseline']['test_accuracy']:.2f} |")
print(f"\nEpoch budget of the comparison nets: {cmp['budget']} (everything the GPP job trained: "
      "train, grow, push and fine-tune epochs). Stopped: " + g.get("stopped", "-") + ".")
EOF
