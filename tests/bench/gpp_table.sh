#!/usr/bin/env bash
# GPP results table (bench only, not a registered test).
#
#   tests/bench/gpp_table.sh [JOB.json] [--out DIR] [--threads N] [--no-schedule]
#                            [--render-only]
#
# Builds the runner if needed, runs JOB (default: the default lenet5 job,
# {"dataset":"fashion-mnist","model":"lenet5"}) with --baselines, then the
# ablation "prune alone" (the same job with push.epochs 0), and prints a
# markdown table: baseline, GPP accuracy-first, GPP size-first, L1, random,
# scratch (the three at size-first's widths, given GPP's whole post-train
# epoch budget), L1 and random on GPP's schedule (--schedule-baselines: the
# same widths after every iteration, the same epochs between them; left out
# with --no-schedule), prune alone (its size-first).
# Times: baseline = its train stage; GPP rows and prune alone = wall time of
# the stages up to and including that model (train + push/prune); L1/random/
# scratch = their own stage; the schedule rows = the sum of their steps.
#
# --render-only prints the table of an existing --out DIR (DIR/gpp,
# DIR/gpp.log, DIR/ablation, DIR/ablation.log) without running anything.
# Environment: BUILD (meson build dir, default $ROOT/build), RUNNER (a command
# taking `JOB.json --out DIR [--baselines] [--threads N]`; default
# BUILD/worker/gpp-worker run when it has the run command, else
# BUILD/tests/unit/gpp/run_tool), PY (default /usr/bin/python3).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PY=${PY:-/usr/bin/python3}
JOB=""
OUT=""
THREADS=2
SCHEDULE_FLAG=--schedule-baselines
RENDER_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) OUT=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --no-schedule) SCHEDULE_FLAG=""; shift ;;
    --render-only) RENDER_ONLY=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) JOB=$1; shift ;;
    esac
done
if [ "$RENDER_ONLY" = 1 ] && [ -z "$OUT" ]; then
    echo "--render-only needs --out DIR" >&2
    exit 2
fi
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/gpp-table.XXXXXX)
mkdir -p "$OUT"

if [ "$RENDER_ONLY" = 1 ]; then
    RUNNER=:
elif [ -z "${RUNNER:-}" ]; then
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$ROOT" -Dcuda=disabled >&2
    if ninja -C "$BUILD" worker/gpp-worker >&2 &&
        { "$BUILD/worker/gpp-worker" 2>&1 || true; } | grep -q 'run JOB'; then
        RUNNER="$BUILD/worker/gpp-worker run"
    else
        ninja -C "$BUILD" tests/unit/gpp/run_tool >&2
        RUNNER="$BUILD/tests/unit/gpp/run_tool"
    fi
fi

if [ -z "$JOB" ]; then
    JOB=$OUT/job.json
    echo '{"dataset":"fashion-mnist","model":"lenet5"}' > "$JOB"
fi
"$PY" - "$JOB" "$OUT/ablation.json" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))
job.setdefault("push", {})["epochs"] = 0
json.dump(job, open(sys.argv[2], "w"))
EOF

run() { # name job extra-args...
    local name=$1 job=$2
    shift 2
    rm -rf "${OUT:?}/$name"
    local t0 t1
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    $RUNNER "$job" --out "$OUT/$name" --threads "$THREADS" "$@" > "$OUT/$name.log" 2>&1 ||
        { echo "$name failed, see $OUT/$name.log" >&2; tail -20 "$OUT/$name.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t0 $t1" > "$OUT/$name.wall"
}
if [ "$RENDER_ONLY" = 0 ]; then
    echo "running GPP + baselines -> $OUT/gpp" >&2
    # shellcheck disable=SC2086
    run gpp "$JOB" --baselines $SCHEDULE_FLAG
    echo "running prune alone (push.epochs 0) -> $OUT/ablation" >&2
    run ablation "$OUT/ablation.json"
fi

"$PY" - "$OUT" "$JOB" <<'EOF'
import json, re, sys
out, jobfile = sys.argv[1], sys.argv[2]

kinds = {}

def stage_times(log):
    # "  03 prune    params ... (12.3 s)" -> {3: 12.3}
    t = {}
    for line in open(log):
        m = re.match(r"\s*(\d+) (\S+)\s+params .*\(([\d.]+) s\)\s*$", line)
        if m:
            t[int(m.group(1))] = float(m.group(3))
            kinds[(log, int(m.group(1)))] = m.group(2)
    return t

def through(times, idx):  # the stages 0..idx (the GPP chain; baselines come after)
    return sum(v for k, v in times.items() if k <= idx)

g = json.load(open(f"{out}/gpp/summary.json"))
a = json.load(open(f"{out}/ablation/summary.json"))
gt, at = stage_times(f"{out}/gpp.log"), stage_times(f"{out}/ablation.log")
base = g["baseline"]
rows = [("baseline", base, gt.get(base["index"], 0.0)),
        ("GPP accuracy-first", g["accuracy_first"], through(gt, g["accuracy_first"]["index"])),
        ("GPP size-first", g["size_first"], through(gt, g["size_first"]["index"]))]
for k, label in (("l1", "L1-filter (same widths)"), ("random", "random (same widths)"),
                 ("scratch", "scratch (same widths)"),
                 ("l1_schedule", "L1-filter, GPP's schedule"),
                 ("random_schedule", "random, GPP's schedule")):
    s = g.get("baselines", {}).get(k)
    if s and k.endswith("_schedule"):   # every step of the chain
        one = g["baselines"].get(k[:-9], {}).get("index", -1)
        t = sum(v for i, v in gt.items()
                if kinds.get((f"{out}/gpp.log", i)) == k[:-9] and i != one)
        rows.append((label, s, t))
    elif s:
        rows.append((label, s, gt.get(s["index"], 0.0)))
rows.append(("prune alone, size-first", a["size_first"], through(at, a["size_first"]["index"])))

def widths(s):
    return "-".join(str(l["width"]) for l in s.get("layers", []))

print(f"Job: `{json.dumps(json.load(open(jobfile)), separators=(',', ':'))}`; "
      f"prune-alone adds push.epochs 0.\n")
spec = json.load(open(f"{out}/gpp/job.json"))

def epochs_at_width(s):
    # epochs the model trained at its own widths: the baseline its train
    # (+ grow) epochs, a prune its fine-tune (the last one holds the final
    # recovery), a finetune stage its prune's fine-tune and its own, a
    # baseline row its budget
    if s.get("stage") in ("train", "grow"):
        return spec["train"]["epochs"]
    if s.get("stage") == "prune":
        return s.get("finetune_epochs", spec["prune"]["finetune_epochs"])
    if s.get("stage") == "finetune":   # the final recovery of an earlier prune: both fine-tunes
        pool = a["stages"] if s is a["size_first"] else g["stages"]
        src = next(x for x in pool if x["index"] == s["from_stage"])
        return src.get("finetune_epochs", spec["prune"]["finetune_epochs"]) + s["finetune_epochs"]
    if "budget_epochs" in s:
        return s["budget_epochs"]
    # checkpoints from before budget_epochs was recorded: the runner's rule
    after = sum(spec["push"]["epochs"] if x["stage"] == "push" else
                x.get("finetune_epochs", spec["prune"]["finetune_epochs"])
                for x in g["stages"] if x["stage"] in ("push", "prune"))
    if s.get("stage") == "scratch":
        return after + spec["train"]["epochs"]
    return after if s.get("iteration", 0) == 0 else "-"

print("| model | widths | params | × fewer | FLOPs | × fewer | epochs at widths | val % | test % | Δ test | time s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
bp, bf, bt = base["params"], base["flops"], base["test_accuracy"]
for name, s, t in rows:
    print(f"| {name} | {widths(s)} | {s['params']:,} | {bp / s['params']:.1f} | {s['flops']:,} | "
          f"{bf / s['flops']:.1f} | {epochs_at_width(s)} | {100 * s['val_accuracy']:.2f} | "
          f"{100 * s['test_accuracy']:.2f} | {100 * (s['test_accuracy'] - bt):+.2f} | {t:.1f} |")
last_g = max(s["index"] for s in g["stages"])
n_test = None
for line in open(f"{out}/gpp.log"):
    m = re.search(r"/ (\d+) test\)", line)
    if m:
        n_test = int(m.group(1))
        break
if n_test:
    p = base["test_accuracy"]
    se = 100 * (p * (1 - p) / n_test) ** 0.5
    print(f"\nTest-set noise: one accuracy near {100 * p:.0f} % on {n_test} images has a standard "
          f"error of {se:.2f} points (binomial); two rows closer than about {2 * se:.1f} points "
          f"are not told apart by this test set.")
cuts = [s for s in g["stages"] if s["stage"] == "prune" and "cut_compare" in s]
if cuts:
    print("\nRight after each cut, before any fine-tune (prune.compare_cut): the same net cut to "
          "the same widths by GPP's choice, by the L1 norm, and at random (mean of "
          f"{len(cuts[0]['cut_compare']['random_test_draws'])} draws); val % / test %. "
          "GPP's M' is chosen on the validation set, so its val column is optimistic; "
          "the test column is not.\n")
    print("| prune | params after | GPP | L1 | random | GPP − L1 (test) | GPP − random (test) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in cuts:
        c = s["cut_compare"]
        print(f"| {s['iteration'] + 1} | {s['params']:,} | {100 * c['gpp_val']:.2f} / "
              f"{100 * c['gpp_test']:.2f} | {100 * c['l1_val']:.2f} / {100 * c['l1_test']:.2f} | "
              f"{100 * c['random_val']:.2f} / {100 * c['random_test']:.2f} | "
              f"{100 * (c['gpp_test'] - c['l1_test']):+.2f} | "
              f"{100 * (c['gpp_test'] - c['random_test']):+.2f} |")
print(f"\nGPP job without baselines (train + push/prune stages): {through(gt, last_g):.1f} s; "
      f"with baselines: {g.get('elapsed_s', 0):.1f} s. Stopped: {g.get('stopped', '-')}. "
      f"Prune alone stopped: {a.get('stopped', '-')}.")
EOF
