#!/usr/bin/python3
"""The PyTorch peer of `gpp-worker bench`, and a network-description -> torch
module builder shared with tests/unit/nn/gen_fixtures.py.

    torch_peer.py --desc FILE.json --batch B --steps N [--threads T] [--warmup W]
                  [--device cpu|cuda[:N]] [--no-tf32]
    torch_peer.py --desc FILE.json --count

The description is gpp/netdesc.h's canonical JSON (`gpp-worker zoo NAME
--input CxHxW` prints it).  Bench prints one JSON line like gpp-worker bench:
train_images_per_s (zero_grad + forward + cross-entropy + backward + SGD
momentum step), infer_images_per_s (eval, inference_mode), peak_rss_kb.
Run it with /usr/bin/python3 (Debian's python3-torch).

--device cuda: model, batch and optimiser on the GPU, eager mode with
PyTorch's defaults (cudnn.benchmark off, TF32 allowed in cuDNN convolutions
as PyTorch does by default, not in matmuls); torch.cuda.synchronize() before
each clock read.  --no-tf32 turns TF32 off everywhere (strict FP32, like the
engine's default)."""
import argparse
import collections
import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Graph(nn.Module):
    """A DAG of layers in topological order (branches, concatenations)."""

    def __init__(self, layers, mods):
        super().__init__()
        self.layers = layers
        for name, m in mods.items():      # state_dict keys are the layer names
            self.add_module(name, m)
        last_use = {}
        for i, l in enumerate(layers):
            for s in l["inputs"]:
                last_use[s] = i
        self.free_after = collections.defaultdict(list)
        for name, i in last_use.items():
            self.free_after[i].append(name)

    def forward(self, x):
        vals = {"input": x}
        out = x
        for i, l in enumerate(self.layers):
            ins = [vals[s] for s in l["inputs"]]
            t = l["type"]
            if t == "concat":
                out = torch.cat(ins, dim=1)
            elif t == "flatten":
                out = ins[0].flatten(1)
            elif t == "fc":
                out = self._modules[l["name"]](ins[0].flatten(1))
            elif t == "bn" and ins[0].dim() == 2:
                out = self._modules[l["name"]](ins[0][:, :, None, None]).flatten(1)
            else:
                out = self._modules[l["name"]](ins[0])
            vals[l["name"]] = out
            for name in self.free_after[i]:
                vals.pop(name, None)
        return out.flatten(1)


def build(desc):
    """A torch module for a canonical network description, whose
    state_dict() keys are the checkpoint names ("conv1.weight", ...).
    The loss layer is left out (the caller applies F.cross_entropy)."""
    C, H, W = desc["input"]
    layers = [l for l in desc["layers"] if l["type"] != "softmax-cross-entropy"]
    shape = {"input": (C, H, W)}
    mods = collections.OrderedDict()
    chain = True
    prev = "input"
    cons = collections.Counter(s for l in layers for s in l["inputs"])
    for l in layers:
        ins = l["inputs"]
        if ins != [prev]:
            chain = False
        prev = l["name"]
        c, h, w = shape[ins[0]]
        t, name = l["type"], l["name"]
        if t == "conv":
            k, s, p = l["k"], l["stride"], l["pad"]
            mods[name] = nn.Conv2d(c, l["out"], k, s, p, bias=l["bias"])
            shape[name] = (l["out"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif t == "bn":
            mods[name] = nn.BatchNorm2d(c, eps=l["eps"], momentum=l["momentum"])
            shape[name] = (c, h, w)
        elif t == "relu":
            mods[name] = nn.ReLU(inplace=cons[ins[0]] == 1 and ins[0] != "input")
            shape[name] = (c, h, w)
        elif t in ("maxpool", "avgpool"):
            k, s, p = l["k"], l["stride"], l["pad"]
            mods[name] = (nn.MaxPool2d(k, s, p) if t == "maxpool"
                          else nn.AvgPool2d(k, s, p, count_include_pad=True))
            shape[name] = (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif t == "global-avgpool":
            mods[name] = nn.AdaptiveAvgPool2d(1)
            shape[name] = (c, 1, 1)
        elif t == "fc":
            mods[name] = nn.Linear(c * h * w, l["out"], bias=l["bias"])
            shape[name] = (l["out"], 1, 1)
        elif t == "dropout":
            mods[name] = nn.Dropout(l["p"])
            shape[name] = (c, h, w)
        elif t == "flatten":
            shape[name] = (c * h * w, 1, 1)
        elif t == "concat":
            shape[name] = (sum(shape[s][0] for s in ins), h, w)
        else:
            raise ValueError("unknown layer type " + t)
    if not chain:
        return Graph(layers, mods)
    # A chain: nn.Sequential (the peer's fastest form), 4-D until a flatten or fc.
    seq = collections.OrderedDict()
    flat = False
    for l in layers:
        t, name = l["type"], l["name"]
        if t in ("fc",) and not flat:
            seq[name + "_flatten"] = nn.Flatten(1)
            flat = True
        if t == "flatten":
            seq[name] = nn.Flatten(1)
            flat = True
            continue
        if t == "concat":
            raise ValueError("concat in a chain")
        m = mods[name]
        if t == "bn" and flat:
            m = nn.BatchNorm1d(m.num_features, eps=m.eps, momentum=m.momentum)
        seq[name] = m
    if not flat:
        seq["_flatten"] = nn.Flatten(1)
    return nn.Sequential(seq)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--desc", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-tf32", action="store_true")
    a = ap.parse_args()
    with open(a.desc) as f:
        desc = json.load(f)
    torch.manual_seed(1)
    model = build(desc)
    if a.count:
        print(json.dumps({"params": count_params(model)}))
        return
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and a.no_tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    C, H, W = desc["input"]
    classes = desc["classes"]
    model = model.to(dev)
    x = torch.randn(a.batch, C, H, W).to(dev)
    y = torch.randint(0, classes, (a.batch,)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    t_train = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        for _ in range(min(a.warmup, 2)):
            model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            model(x)
        sync()
        t_inf = time.perf_counter() - t0
    print(json.dumps({
        "peer": "torch " + torch.__version__,
        "device": str(dev) + (" " + torch.cuda.get_device_name(dev) if cuda else ""),
        "tf32": bool(cuda and torch.backends.cudnn.allow_tf32),
        "batch": a.batch, "threads": a.threads, "steps": a.steps,
        "train_images_per_s": a.batch * a.steps / t_train,
        "infer_images_per_s": a.batch * a.steps / t_inf,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "params": count_params(model),
    }))


if __name__ == "__main__":
    sys.exit(main())
