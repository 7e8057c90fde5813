#!/usr/bin/env bash
# GPP against its baselines over several seeds (bench only, not a registered
# test).
#
#   tests/bench/gpp_seeds.sh [JOB.json] [--seeds "1 2 3 4 5"] [--out DIR]
#                            [--threads N] [--no-schedule] [--render-only]
#                            [--cuts-only]
#
# Runs tests/bench/gpp_table.sh once per seed (JOB with "seed" set; default
# job: the default lenet5 job) into DIR/seed-N, then prints, over the seeds:
#   - each row of the table (baseline, GPP size-first, the baselines at its
#     widths, prune alone) as mean ± standard error of the test and
#     validation accuracy, with the mean parameter count;
#   - GPP size-first minus each baseline, paired by seed (every baseline of
#     a seed is at that seed's GPP widths): mean, standard error, t and how
#     many seeds GPP was ahead;
#   - right after each cut (prune.compare_cut), GPP's choice minus L1 and
#     minus random on the same net, paired over seeds and prunes.
# A seed whose DIR/seed-N/gpp/summary.json exists is not run again, so an
# interrupted run goes on where it stopped. --render-only runs nothing.
# --cuts-only runs GPP alone (`gpp-worker run JOB --out DIR/seed-N/gpp`, no
# baselines, no ablation; an unfinished one is resumed) and prints each
# seed's size and the right-after-the-cut table.
# Environment: as gpp_table.sh (BUILD, RUNNER, PY).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-/usr/bin/python3}
JOB=""
OUT=""
SEEDS="1 2 3 4 5"
PASS=()
RENDER_ONLY=0
CUTS_ONLY=0
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
    --out) OUT=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --threads) PASS+=(--threads "$2"); THREADS=$2; shift 2 ;;
    --no-schedule) PASS+=(--no-schedule); shift ;;
    --render-only) RENDER_ONLY=1; shift ;;
    --cuts-only) CUTS_ONLY=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) JOB=$1; shift ;;
    esac
done
[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/gpp-seeds.XXXXXX)
mkdir -p "$OUT"
if [ -z "$JOB" ]; then
    JOB=$OUT/job.json
    [ -f "$JOB" ] || echo '{"dataset":"fashion-mnist","model":"lenet5"}' > "$JOB"
fi

# JOB with "seed" set, written to $2
seed_job() {
    "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); j["seed"]=int(sys.argv[2]); json.dump(j, open(sys.argv[3], "w"))' \
        "$JOB" "$1" "$2"
}

if [ "$RENDER_ONLY" = 0 ] && [ "$CUTS_ONLY" = 1 ]; then
    BUILD=${BUILD:-$ROOT/build}
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$ROOT" -Dcuda=disabled >&2
    ninja -C "$BUILD" worker/gpp-worker >&2
    for seed in $SEEDS; do
        dir=$OUT/seed-$seed
        mkdir -p "$dir"
        seed_job "$seed" "$dir/job.json"
        resume=()
        [ -d "$dir/gpp" ] && resume=(--resume)
        echo "seed $seed -> $dir/gpp" >&2
        "$BUILD/worker/gpp-worker" run "$dir/job.json" --out "$dir/gpp" --threads "$THREADS" \
            "${resume[@]}" > "$dir/gpp.log" 2>&1
    done
elif [ "$RENDER_ONLY" = 0 ]; then
    for seed in $SEEDS; do
        dir=$OUT/seed-$seed
        if [ -f "$dir/gpp/summary.json" ] && [ -f "$dir/ablation/summary.json" ]; then
            echo "seed $seed: already done ($dir)" >&2
            continue
        fi
        mkdir -p "$dir"
        seed_job "$seed" "$dir/job.json"
        echo "seed $seed -> $dir" >&2
        "$ROOT/tests/bench/gpp_table.sh" "$dir/job.json" --out "$dir" "${PASS[@]}" > "$dir/table.md"
    done
fi

"$PY" - "$OUT" "$JOB" "$SEEDS" "$CUTS_ONLY" <<'EOF'
import json, math, os, sys
out, jobfile, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split()
cuts_only = sys.argv[4] == "1"
runs = []
for sd in seeds:
    d = f"{out}/seed-{sd}"
    try:
        g = json.load(open(f"{d}/gpp/summary.json"))
        a = None if cuts_only else json.load(open(f"{d}/ablation/summary.json"))
        if cuts_only and not g.get("stopped"):   # written after every stage
            raise ValueError("unfinished")
    except (OSError, ValueError):
        print(f"(seed {sd}: no complete run in {d}, left out)")
        continue
    runs.append((sd, g, a))
if not runs:
    sys.exit("no complete seed")

def mean_se(xs):
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, sd / math.sqrt(n)

def row(g, a, key):
    if key == "baseline": return g["baseline"]
    if key == "size_first": return g["size_first"]
    if key == "accuracy_first": return g["accuracy_first"]
    if key == "prune_alone": return a["size_first"]
    return g.get("baselines", {}).get(key)

labels = [("baseline", "baseline"), ("accuracy_first", "GPP accuracy-first"),
          ("size_first", "GPP size-first"), ("l1", "L1-filter (same widths)"),
          ("random", "random (same widths)"), ("scratch", "scratch (same widths)"),
          ("l1_schedule", "L1-filter, GPP's schedule"),
          ("random_schedule", "random, GPP's schedule"),
          ("prune_alone", "prune alone, size-first")]
print(f"Job: `{json.dumps(json.load(open(jobfile)), separators=(',', ':'))}`, seeds "
      f"{', '.join(sd for sd, _, _ in runs)} ({len(runs)} runs); mean ± standard error over "
      "the seeds.\n")
if cuts_only:
    for sd, g, _ in runs:
        b, s = g["baseline"], g["size_first"]
        print(f"- seed {sd}: size-first {b['params'] / s['params']:.1f}x fewer parameters, "
              f"{b['flops'] / s['flops']:.1f}x fewer FLOPs, test {100 * s['test_accuracy']:.2f} % "
              f"(baseline {100 * b['test_accuracy']:.2f} %)")
if not cuts_only:
    print("| model | params (mean) | × fewer | val % | test % | Δ test vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    bp = sum(g["baseline"]["params"] for _, g, _ in runs) / len(runs)
    for key, label in labels:
        rs = [(row(g, a, key), row(g, a, "baseline")) for _, g, a in runs]
        if any(r is None for r, _ in rs):
            continue
        p = sum(r["params"] for r, _ in rs) / len(rs)
        v = mean_se([100 * r["val_accuracy"] for r, _ in rs])
        t = mean_se([100 * r["test_accuracy"] for r, _ in rs])
        d = mean_se([100 * (r["test_accuracy"] - b["test_accuracy"]) for r, b in rs])
        print(f"| {label} | {p:,.0f} | {bp / p:.1f} | {v[0]:.2f} ± {v[1]:.2f} | {t[0]:.2f} ± {t[1]:.2f} | "
              f"{d[0]:+.2f} ± {d[1]:.2f} |")

    print("\nGPP size-first minus each baseline at the same widths, paired by seed (test points):\n")
    print("| against | mean difference | standard error | t | seeds GPP ahead |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, label in labels[3:]:
        ds = []
        for _, g, a in runs:
            r = row(g, a, key)
            if r is not None:
                ds.append(100 * (g["size_first"]["test_accuracy"] - r["test_accuracy"]))
        if len(ds) < len(runs):
            continue
        m, se = mean_se(ds)
        t = m / se if se and se == se and se > 0 else float("nan")
        print(f"| {label} | {m:+.2f} | {se:.2f} | {t:+.1f} | {sum(x > 0 for x in ds)} of {len(ds)} |")

gl, gr, n = [], [], 0
per_prune = {}
for _, g, _ in runs:
    for s in g["stages"]:
        c = s.get("cut_compare")
        if s["stage"] != "prune" or not c:
            continue
        gl.append(100 * (c["gpp_test"] - c["l1_test"]))
        gr.append(100 * (c["gpp_test"] - c["random_test"]))
        per_prune.setdefault(s["iteration"] + 1, []).append(
            (100 * c["gpp_test"], 100 * c["l1_test"], 100 * c["random_test"]))
if gl:
    print("\nRight after each cut, before any fine-tune (test %): GPP's choice, the L1 norm and "
          "random on the same net to the same widths, mean ± standard error over the seeds:\n")
    print("| prune | GPP | L1 | random | GPP − L1 | GPP − random |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k in sorted(per_prune):
        xs = per_prune[k]
        cg, cl, cr = (mean_se([x[i] for x in xs]) for i in range(3))
        dl, dr = mean_se([x[0] - x[1] for x in xs]), mean_se([x[0] - x[2] for x in xs])
        print(f"| {k} | {cg[0]:.2f} ± {cg[1]:.2f} | {cl[0]:.2f} ± {cl[1]:.2f} | "
              f"{cr[0]:.2f} ± {cr[1]:.2f} | {dl[0]:+.2f} ± {dl[1]:.2f} | {dr[0]:+.2f} ± {dr[1]:.2f} |")
    ml, sl = mean_se(gl)
    mr, sr = mean_se(gr)
    print(f"\nOver all {len(gl)} cuts: GPP − L1 {ml:+.2f} ± {sl:.2f}, GPP − random {mr:+.2f} ± {sr:.2f} "
          f"test points; GPP ahead of L1 in {sum(x > 0 for x in gl)}, of random in "
          f"{sum(x > 0 for x in gr)}.")
EOF
