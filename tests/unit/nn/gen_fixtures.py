#!/usr/bin/python3
"""Generate the engine-vs-PyTorch fixtures of test_nn_torch (run by hand):

    /usr/bin/python3 tests/unit/nn/gen_fixtures.py [path/to/gpp-worker]

For lenet5, vgg-small and inception-base (1x28x28 input, 10 classes) it
builds the network of `gpp-worker zoo NAME` in PyTorch (float64), sets every
parameter and batch-norm statistic from the deterministic formula below, runs
a batch of 4 fixed inputs and writes tests/unit/nn/fixtures/NAME.gppm with
the description ("network") and the tensors

    input [4, 1, 28, 28], labels [4] (as floats),
    eval_logits [4, 10]   eval mode (running statistics),
    logits [4, 10], loss [1]   training mode (batch statistics),
    grad/<param>          the loss gradient of every parameter with at most
                          4096 elements, in full,
    gradproj/<param> [32] for larger ones, 32 random +-1 projections of it
                          (sum_i s(r, i) * g[i]; s below), and
    gradsq/<param> [1]    the sum of squares of every parameter gradient.

Weights are not stored (lenet5 alone would be 1.7 MB): both sides compute
them.  For tensor `name` element i (row-major), with 32-bit unsigned
arithmetic:
    h = fnv1a32(name);  x = mix(h + i * 2654435761);  v = x / 2^32
    mix(x): x ^= x >> 16; x *= 0x45d9f3b; x ^= x >> 16; x *= 0x45d9f3b; x ^= x >> 16
  conv / fc weight  (2v - 1) * sqrt(6 / fan_in)   fan_in = numel / out
  conv / fc bias    (2v - 1) * 0.1
  bn weight         0.5 + v          bn bias, running_mean  (2v - 1) * 0.2
  bn running_var    0.5 + v
computed in double and rounded to float32.  Projection signs:
s(r, i) = -1 if mix(r * 0x9e3779b9 + i * 2654435761 + 7) >= 2^31 else +1.
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
import gppm  # noqa: E402
import torch_peer  # noqa: E402

M32 = 0xFFFFFFFF
FULL_MAX = 4096
NPROJ = 32


def fnv1a32(s):
    h = 2166136261
    for b in s.encode("ascii"):
        h = ((h ^ b) * 16777619) & M32
    return h


def mix(x):
    x = x.astype(np.uint64) & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x45D9F3B)) & M32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x45D9F3B)) & M32
    x ^= x >> np.uint64(16)
    return x


def uniform(name, n):
    i = np.arange(n, dtype=np.uint64)
    x = mix((np.uint64(fnv1a32(name)) + i * np.uint64(2654435761)) & M32)
    return x.astype(np.float64) / 4294967296.0


def value(name, shape, layer_type):
    n = int(np.prod(shape))
    v = uniform(name, n)
    if name.endswith(".running_var") or (layer_type == "bn" and name.endswith(".weight")):
        out = 0.5 + v
    elif layer_type == "bn":
        out = (2 * v - 1) * 0.2
    elif name.endswith(".weight"):
        out = (2 * v - 1) * np.sqrt(6.0 / (n / shape[0]))
    else:
        out = (2 * v - 1) * 0.1
    return out.astype(np.float32).reshape(shape)


def signs(n):
    i = np.arange(n, dtype=np.uint64)
    rows = []
    for r in range(NPROJ):
        x = mix((np.uint64(r) * np.uint64(0x9E3779B9) + i * np.uint64(2654435761) + np.uint64(7)) & M32)
        rows.append(np.where(x >= 2 ** 31, -1.0, 1.0))
    return np.stack(rows)


def main():
    worker = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "worker", "gpp-worker")
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(4, 1, 28, 28, generator=g, dtype=torch.float64).float()
    y = torch.tensor([3, 7, 0, 7])
    os.makedirs(os.path.join(HERE, "fixtures"), exist_ok=True)
    for name in ("lenet5", "vgg-small", "inception-base"):
        desc = json.loads(subprocess.check_output([worker, "zoo", name, "--input", "1x28x28"]))
        types = {l["name"]: l["type"] for l in desc["layers"]}
        model = torch_peer.build(desc).double()
        sd = model.state_dict()
        for k in sd:
            if k.endswith("num_batches_tracked"):
                continue
            sd[k].copy_(torch.from_numpy(value(k, tuple(sd[k].shape), types[k.rsplit(".", 1)[0]])))
        model.eval()
        with torch.no_grad():
            eval_logits = model(x.double())
        model.train()
        logits = model(x.double())
        loss = F.cross_entropy(logits, y)
        loss.backward()
        tensors = {
            "input": x.numpy(),
            "labels": y.float().numpy(),
            "eval_logits": eval_logits.float().numpy(),
            "logits": logits.detach().float().numpy(),
            "loss": np.array([loss.item()], dtype=np.float32),
        }
        for k, p in model.named_parameters():
            gr = p.grad.detach().numpy().astype(np.float64).ravel()
            tensors["gradsq/" + k] = np.array([np.dot(gr, gr)], dtype=np.float32)
            if gr.size <= FULL_MAX:
                tensors["grad/" + k] = gr.astype(np.float32).reshape(tuple(p.shape))
            else:
                tensors["gradproj/" + k] = (signs(gr.size) @ gr).astype(np.float32)
        doc = {"format": "gppm", "network": desc,
               "meta": {"fixture": "engine vs PyTorch " + torch.__version__ + " (float64)",
                        "generator": "tests/unit/nn/gen_fixtures.py"}}
        path = os.path.join(HERE, "fixtures", name + ".gppm")
        gppm.save(path, doc, tensors)
        print("%s: loss %.6f, %d tensors, %d bytes" % (path, loss.item(), len(tensors),
                                                     os.path.getsize(path)))


if __name__ == "__main__":
    main()
