#!/usr/bin/python3
"""End-to-end check of the ONNX export (meson test export-onnxruntime).

1. make_models.py writes .gppm checkpoints (seeded random weights) to a temp dir;
2. the C exporter (gpp_export_main, through export_tool) writes each as .onnx;
3. ONNX Runtime (onnxruntime-node, ort_run.js) runs each on the first 64
   Fashion-MNIST test images, as one batch of 64 and one of 5;
4. deploy/python/gpp_torch.py loads each .gppm into PyTorch and runs the same
   images, read here independently;
5. the engine (worker/nn, through engine_logits) runs them too;
and asserts, per model: output named "logits", [64, 10] (and [5, 10]);
|onnx - ref| <= 1e-4 * (1 + |ref|) everywhere and the same argmax for every
image, for ref = PyTorch and ref = the engine; the batch of 5 gives the
first 5 rows of the batch of 64; the exporter's parameter count equals the
module's.

    check_onnx.py --export-tool EXE --engine-tool EXE --node NODE --ort-script ort_run.js
                  [--data DIR]
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "deploy", "python"))
import gpp_torch  # noqa: E402
import make_models  # noqa: E402

N_IMAGES = 64
RTOL = 1e-4


def read_idx_images(path, count):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(16)
        magic, n, rows, cols = np.frombuffer(head, dtype=">u4")
        if magic != 0x803 or n < count:
            raise ValueError("%s: not an IDX3 image file with %d images" % (path, count))
        pix = np.frombuffer(f.read(count * rows * cols), dtype=np.uint8)
    return (pix.astype(np.float32) / 255.0).reshape(count, 1, rows, cols)


def find_images(data_dir):
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError("no t10k-images-idx3-ubyte[.gz] in %s (Debian: dataset-fashion-mnist, "
                            "or set GPP_FASHION_MNIST_DIR)" % data_dir)


def fail(msg):
    sys.stderr.write("FAIL: %s\n" % msg)
    return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export-tool", required=True)
    ap.add_argument("--engine-tool", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--ort-script", required=True)
    ap.add_argument("--data", default=os.environ.get("GPP_FASHION_MNIST_DIR",
                                                     "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    if not a.node:
        return fail("node (nodejs) not found: install it (deploy/install-deps.sh)")
    ort_dir = os.path.dirname(os.path.abspath(a.ort_script))
    if not os.path.isdir(os.path.join(ort_dir, "node_modules", "onnxruntime-node")):
        return fail("onnxruntime-node is not installed in %s: run `npm ci --ignore-scripts` "
                    "there (deploy/install-deps.sh does)" % ort_dir)
    images = find_images(a.data)
    x = read_idx_images(images, N_IMAGES)
    torch.set_num_threads(1)

    failures = 0
    with tempfile.TemporaryDirectory(prefix="gpp-export-") as tmp:
        paths = make_models.write_models(tmp)
        xfile = os.path.join(tmp, "images.f32")
        x.astype("<f4").tofile(xfile)
        onnx, exported_params = {}, {}
        for name, gppm_path in paths.items():
            out = os.path.join(tmp, name + ".onnx")
            r = subprocess.run([a.export_tool, gppm_path, "--onnx", out],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 or not os.path.isfile(out):
                failures += fail("export of %s: rc %d\n%s%s" % (name, r.returncode, r.stdout,
                                                                r.stderr))
                continue
            m = re.search(r"(\d+) parameters", r.stdout)
            exported_params[name] = int(m.group(1)) if m else -1
            onnx[name] = out
        if not onnx:
            return 1
        r = subprocess.run([a.node, os.path.abspath(a.ort_script), images, str(N_IMAGES), tmp] + list(onnx.values()),
                           capture_output=True, text=True, timeout=120, cwd=ort_dir)
        if r.returncode != 0:
            return fail("ort_run.js: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        with open(os.path.join(tmp, "ort_report.json")) as f:
            report = json.load(f)
        print("onnxruntime-node %s, %d images of %s" % (report.get("ort_version"), N_IMAGES,
                                                       images))
        for name, gppm_path in paths.items():
            if name not in onnx:
                continue
            entry = report["models"].get(name)
            model = gpp_torch.from_gppm(gppm_path)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy().astype(np.float64)
            classes = ref.shape[1]
            if entry is None:
                failures += fail("%s: no ONNX Runtime result" % name)
                continue
            if entry["inputNames"] != ["input"] or entry["outputNames"] != ["logits"]:
                failures += fail("%s: ONNX names %s -> %s, want ['input'] -> ['logits']"
                                 % (name, entry["inputNames"], entry["outputNames"]))
            if entry["dims"] != [N_IMAGES, classes] or entry["dims5"] != [5, classes]:
                failures += fail("%s: ONNX output dims %s and %s, want [%d, %d] and [5, %d]"
                                 % (name, entry["dims"], entry["dims5"], N_IMAGES, classes,
                                    classes))
                continue
            got = np.fromfile(os.path.join(tmp, name + ".logits.bin"),
                              dtype="<f4").reshape(N_IMAGES, classes).astype(np.float64)
            got5 = np.fromfile(os.path.join(tmp, name + ".logits5.bin"),
                               dtype="<f4").reshape(5, classes).astype(np.float64)
            efile = os.path.join(tmp, name + ".engine.bin")
            r = subprocess.run([a.engine_tool, gppm_path, xfile, str(N_IMAGES), efile],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                failures += fail("%s: engine_logits: %s" % (name, r.stderr.strip()))
                continue
            eng = np.fromfile(efile, dtype="<f4").astype(np.float64)
            if eng.size != N_IMAGES * classes:
                failures += fail("%s: the engine gives %d logits, want %d"
                                 % (name, eng.size, N_IMAGES * classes))
                continue
            eng = eng.reshape(N_IMAGES, classes)
            ediff = np.abs(got - eng)
            esame = np.argmax(got, 1) == np.argmax(eng, 1)
            if not np.all(ediff <= RTOL * (1.0 + np.abs(eng))):
                i = np.unravel_index(np.argmax(ediff - RTOL * (1.0 + np.abs(eng))), ediff.shape)
                failures += fail("%s: ONNX and engine logits differ at image %d class %d: "
                                 "onnx %.7g engine %.7g" % (name, i[0], i[1], got[i], eng[i]))
            if not esame.all():
                failures += fail("%s: ONNX and engine argmax differ on %d images"
                                 % (name, (~esame).sum()))
            tol = RTOL * (1.0 + np.abs(ref))
            diff = np.abs(got - ref)
            diff5 = np.abs(got5 - ref[:5])
            same = np.argmax(got, 1) == np.argmax(ref, 1)
            print("%-16s params %8d  logits std %.3f  max|onnx-torch| %.2e  "
                  "max|onnx-engine| %.2e  argmax agree %d/%d (torch) %d/%d (engine)  "
                  "batch-5 max diff %.2e"
                  % (name, model.param_count(), ref.std(), diff.max(), ediff.max(), same.sum(),
                     N_IMAGES, esame.sum(), N_IMAGES, diff5.max()))
            if not ref.std() > 1e-3:
                failures += fail("%s: the reference logits are (nearly) constant: the check "
                                 "would prove nothing" % name)
            if not np.all(diff <= tol):
                i = np.unravel_index(np.argmax(diff - tol), diff.shape)
                failures += fail("%s: logits differ at image %d class %d: onnx %.7g torch %.7g"
                                 % (name, i[0], i[1], got[i], ref[i]))
            if not np.all(diff5 <= tol[:5]):
                failures += fail("%s: the batch of 5 differs from the batch of 64" % name)
            if not same.all():
                failures += fail("%s: argmax differs on %d images" % (name, (~same).sum()))
            if exported_params[name] != model.param_count():
                failures += fail("%s: exporter counts %d parameters, PyTorch %d"
                                 % (name, exported_params[name], model.param_count()))
            if model.normalized != (name != "lenet5-raw"):
                failures += fail("%s: normalisation %s in PyTorch" % (name, model.normalized))
    if failures:
        return 1
    print("ok: %d models agree" % len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
