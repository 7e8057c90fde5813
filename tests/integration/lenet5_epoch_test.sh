#!/usr/bin/env bash
# Issue 3's bar: lenet5 trained for one epoch on the whole of Fashion-MNIST
# (the Debian package's files, 54,000 training images after the validation
# split) by `gpp-worker run` reaches at least 85 % test accuracy.
#   lenet5_epoch_test.sh PATH/TO/gpp-worker
set -euo pipefail
worker=$1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%s\n' '{"dataset": "fashion-mnist", "model": "lenet5", "train": {"epochs": 1}, "iterations": 0}' > "$out/job.json"
"$worker" run "$out/job.json" --out "$out/run" --threads 2 >"$out/log" 2>&1 || { cat "$out/log"; exit 1; }
/usr/bin/python3 - "$out/run/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
b = s["baseline"]
acc = b["test_accuracy"]
print(f"lenet5, 1 epoch: test accuracy {acc:.4f}, val {b['val_accuracy']:.4f}, params {b['params']}")
assert b["params"] == 431080, b["params"]
assert acc >= 0.85, f"test accuracy {acc:.4f} < 0.85"
PY
