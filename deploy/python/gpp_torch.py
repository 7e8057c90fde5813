#!/usr/bin/python3
"""Build a PyTorch module from a gppd network description or checkpoint.

A ``.gppm`` checkpoint (see ``gppm.py``) holds the network description of
``include/gpp/netdesc.h`` and its tensors.  This module turns the description
into a ``torch.nn.Module`` with the engine's layer semantics and loads the
tensors into it, so a compressed model can be used, fine-tuned or exported
from PyTorch::

    import sys; sys.path.insert(0, "deploy/python")
    import gpp_torch

    model = gpp_torch.from_gppm("out/stage-03-prune.gppm")   # eval mode
    logits = model(x)           # x: float32 [N, C, H, W], pixels in [0, 1]

    python3 deploy/python/gpp_torch.py --check FILE.gppm     # build, load, run once

Layers (the engine's semantics):

    conv            nn.Conv2d(C, out, k, stride, pad, bias)
    bn              nn.BatchNorm2d(C, eps, momentum) on [N, C, H, W];
                    nn.BatchNorm1d after an fc or a flatten ([N, C])
    relu            nn.ReLU
    maxpool         nn.MaxPool2d(k, stride, pad)                  (floor mode)
    avgpool         nn.AvgPool2d(k, stride, pad, count_include_pad=True)  (floor mode)
    global-avgpool  mean over H and W -> [N, C, 1, 1]
    fc              nn.Linear(C*H*W, out, bias); a 4-D input is flattened first
    concat          torch.cat(..., dim=1)
    flatten         torch.flatten(x, 1)
    dropout         nn.Dropout(p)                 (identity in eval mode)
    softmax-cross-entropy
                    not part of forward: the module returns the logits (its
                    input) as [N, classes]; use nn.CrossEntropyLoss to train

Normalisation: when the checkpoint's JSON document has
``"meta": {"normalize": {"mean": [...], "std": [...]}}`` (per-channel mean
and std of x / 255, as gppd's data loaders compute them), the module applies
``(x - mean) / std`` first, so it takes pixels in [0, 1] exactly like the
exported ONNX model (``gpp-worker export``).  Without the key it applies
nothing.

Parameter names: a layer called ``conv1`` becomes the submodule ``conv1``, so
``model.state_dict()`` uses the checkpoint's names (``conv1.weight``,
``bn1.running_mean``, ...) plus BatchNorm's ``num_batches_tracked``.  A ``.``
in a layer name becomes ``:`` in the submodule name, and a name PyTorch
already uses (``forward``, ``training``) gets a ``#`` appended;
``model.layer_names`` maps submodule names back to layer names, and
:func:`load_tensors` / :func:`from_gppm` load by layer name.
"""

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppm  # noqa: E402

__all__ = ["GppNet", "build", "load_tensors", "from_gppm", "normalization"]

LAYER_TYPES = ("conv", "bn", "relu", "maxpool", "avgpool", "global-avgpool", "fc",
               "concat", "flatten", "dropout", "softmax-cross-entropy")


class _GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class _Flatten(nn.Module):
    def forward(self, x):
        return torch.flatten(x, 1)


def _layers(network):
    """The layer list of a network description (object or bare array), with
    the defaults of netdesc.h filled in."""
    layers = network["layers"] if isinstance(network, dict) else network
    if not isinstance(layers, list) or not layers:
        raise ValueError("network: \"layers\" must be a non-empty array")
    out, seen = [], set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ValueError("network.layers[%d] must be an object" % i)
        t = layer.get("type")
        if t not in LAYER_TYPES:
            raise ValueError("network.layers[%d].type must be one of %s, got %r"
                             % (i, ", ".join(LAYER_TYPES), t))
        l = dict(layer)
        l.setdefault("name", "%s%d" % (t, i))
        if l["name"] in seen or l["name"] == "input":
            raise ValueError("network.layers[%d].name %r is used twice or reserved"
                             % (i, l["name"]))
        if "inputs" not in l:
            if t == "concat":
                raise ValueError("network.layers[%d].inputs is required for concat" % i)
            l["inputs"] = ["input" if i == 0 else out[-1]["name"]]
        for src in l["inputs"]:
            if src != "input" and src not in seen:
                raise ValueError("network.layers[%d].inputs: %r is not an earlier layer"
                                 % (i, src))
        seen.add(l["name"])
        if t == "conv":
            l.setdefault("stride", 1)
            l.setdefault("pad", 0)
            l.setdefault("bias", True)
        elif t == "fc":
            l.setdefault("bias", True)
        elif t in ("maxpool", "avgpool"):
            l.setdefault("stride", l["k"])
            l.setdefault("pad", 0)
        elif t == "bn":
            l.setdefault("eps", 1e-5)
            l.setdefault("momentum", 0.1)
        elif t == "dropout":
            l.setdefault("p", 0.5)
        if t == "softmax-cross-entropy" and i != len(layers) - 1:
            raise ValueError("network.layers[%d]: softmax-cross-entropy must be the last layer"
                             % i)
        out.append(l)
    return out


def normalization(doc):
    """(mean, std) lists from a checkpoint document's meta.normalize, or None."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    nz = meta.get("normalize") if isinstance(meta, dict) else None
    if nz is None:
        return None
    if not isinstance(nz, dict) or not isinstance(nz.get("mean"), list) \
            or not isinstance(nz.get("std"), list):
        raise ValueError('meta.normalize must be {"mean": [...], "std": [...]}')
    if any(not s > 0 for s in nz["std"]):
        raise ValueError("meta.normalize.std must be above 0")
    return [float(v) for v in nz["mean"]], [float(v) for v in nz["std"]]


class GppNet(nn.Module):
    """A gppd network as a torch.nn.Module: forward(x) -> logits [N, classes].

    x is float32 [N, C, H, W]; with a normalisation, pixels in [0, 1]."""

    def __init__(self, network, normalize=None):
        super().__init__()
        if not isinstance(network, dict) or not isinstance(network.get("input"), list) \
                or len(network["input"]) != 3:
            raise ValueError('network: "input" [C, H, W] is required to build the module')
        self.input_shape = tuple(int(v) for v in network["input"])
        self.classes = int(network["classes"]) if "classes" in network else None
        layers = _layers(network)
        self._plan = []                 # (layer name, submodule attribute or None, type, inputs)
        self.layer_names = {}           # submodule attribute -> layer name
        shapes = {"input": (4,) + self.input_shape}    # name -> (rank, C, H, W)

        C0 = self.input_shape[0]
        if normalize is not None:
            mean, std = normalize
            if len(mean) not in (1, C0) or len(std) not in (1, C0):
                raise ValueError("meta.normalize: mean and std need %d values (or 1)" % C0)
            mean = torch.tensor(mean * (C0 if len(mean) == 1 else 1), dtype=torch.float32)
            std = torch.tensor(std * (C0 if len(std) == 1 else 1), dtype=torch.float32)
            self.register_buffer("norm_mean", mean.view(1, C0, 1, 1), persistent=False)
            self.register_buffer("norm_std", std.view(1, C0, 1, 1), persistent=False)
            self.normalized = True
        else:
            self.normalized = False

        for i, l in enumerate(layers):
            t, name = l["type"], l["name"]
            ins = [shapes[s] for s in l["inputs"]]
            rank, C, H, W = ins[0]
            where = "layer %d (%r, %s)" % (i, name, t)
            mod = None
            if t == "conv":
                k, s, p = l["k"], l["stride"], l["pad"]
                if H + 2 * p < k or W + 2 * p < k:
                    raise ValueError("%s: window larger than its %dx%d input" % (where, H, W))
                mod = nn.Conv2d(C, l["out"], k, s, p, bias=bool(l["bias"]))
                out = (4, l["out"], (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
            elif t == "bn":
                mod = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(
                    C, eps=l["eps"], momentum=l["momentum"])
                out = ins[0]
            elif t == "relu":
                mod = nn.ReLU()
                out = ins[0]
            elif t in ("maxpool", "avgpool"):
                k, s, p = l["k"], l["stride"], l["pad"]
                if p > k // 2 or H + 2 * p < k or W + 2 * p < k:
                    raise ValueError("%s: bad window for a %dx%d input" % (where, H, W))
                if t == "maxpool":
                    mod = nn.MaxPool2d(k, s, p)
                else:
                    mod = nn.AvgPool2d(k, s, p, ceil_mode=False, count_include_pad=True)
                out = (4, C, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
            elif t == "global-avgpool":
                mod = _GlobalAvgPool()
                out = (4, C, 1, 1)
            elif t == "fc":
                mod = nn.Linear(C * H * W, l["out"], bias=bool(l["bias"]))
                out = (2, l["out"], 1, 1)
            elif t == "concat":
                if any(x[2:] != (H, W) for x in ins):
                    raise ValueError("%s: inputs of different heights and widths" % where)
                out = (4 if any(x[0] == 4 for x in ins) else 2, sum(x[1] for x in ins), H, W)
            elif t == "flatten":
                mod = _Flatten()
                out = (2, C * H * W, 1, 1)
            elif t == "dropout":
                mod = nn.Dropout(l["p"])
                out = ins[0]
            else:   # softmax-cross-entropy: the logits are its input
                out = ins[0]
            shapes[name] = out
            attr = None
            if mod is not None:
                # "." cannot be in a submodule name: it becomes ":"; a name that
                # is already an attribute ("forward", "training") gets a "#".
                # Neither character is allowed in layer names, so no two
                # layers can collide.
                attr = name.replace(".", ":")
                if hasattr(self, attr):
                    attr += "#"
                self.add_module(attr, mod)
                self.layer_names[attr] = name
            self._plan.append((name, attr, t, list(l["inputs"])))

        last = layers[-1]
        self._logits = last["inputs"][0] if last["type"] == "softmax-cross-entropy" \
            else last["name"]
        _, C, H, W = shapes[self._logits]
        if H != 1 or W != 1:
            raise ValueError("the logits (%r) are %dx%dx%d: one value per class is needed"
                             % (self._logits, C, H, W))
        if self.classes is not None and C != self.classes:
            raise ValueError("the network gives %d logits but has %d classes" % (C, self.classes))
        self.classes = C

    def forward(self, x):
        if self.normalized:
            x = (x - self.norm_mean) / self.norm_std
        vals = {"input": x}
        for name, attr, t, inputs in self._plan:
            xs = [vals[s] for s in inputs]
            if t == "concat":
                if any(v.dim() == 4 for v in xs):
                    xs = [v if v.dim() == 4 else v.view(v.shape[0], -1, 1, 1) for v in xs]
                y = torch.cat(xs, dim=1)
            elif t == "softmax-cross-entropy":
                y = xs[0]
            else:
                v = xs[0]
                if t in ("conv", "maxpool", "avgpool", "global-avgpool") and v.dim() == 2:
                    v = v.view(v.shape[0], -1, 1, 1)
                elif t == "fc" and v.dim() != 2:
                    v = torch.flatten(v, 1)
                y = getattr(self, attr)(v)
            vals[name] = y
        return torch.flatten(vals[self._logits], 1)

    def param_count(self):
        """Weights and biases (bn: gamma and beta), as the engine counts them."""
        return sum(p.numel() for p in self.parameters())


def build(network, normalize=None):
    """A GppNet for a network description (dict with "input", "layers" and
    optionally "classes"), randomly initialised by PyTorch."""
    return GppNet(network, normalize)


def load_tensors(model, tensors):
    """Copy checkpoint tensors ({name: array}, e.g. gppm.load's) into `model`.

    Every parameter and batch-norm running statistic of the model must be
    present with the same shape; "optim/..." and other extra names are
    ignored.  Raises ValueError naming the first problem."""
    with torch.no_grad():
        for attr, mod in model.named_children():
            layer = model.layer_names[attr]
            names = [n for n, _ in mod.named_parameters(recurse=False)]
            names += [n for n, _ in mod.named_buffers(recurse=False) if n != "num_batches_tracked"]
            for n in names:
                key = "%s.%s" % (layer, n)
                if key not in tensors:
                    raise ValueError("checkpoint has no tensor %r" % key)
                dst = getattr(mod, n)
                src = torch.as_tensor(tensors[key], dtype=torch.float32)
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError("tensor %r has shape %s, the module needs %s"
                                     % (key, list(src.shape), list(dst.shape)))
                dst.copy_(src)
    return model


def from_gppm(path, normalize=True):
    """Load the .gppm at `path` as a GppNet in eval mode, its weights loaded.

    With normalize=True (default) the checkpoint's meta.normalize, when
    present, is applied inside forward (input: pixels in [0, 1]); with False
    the module expects already-normalised input."""
    doc, tensors = gppm.load(path)
    model = GppNet(doc["network"], normalization(doc) if normalize else None)
    load_tensors(model, tensors)
    return model.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build a PyTorch module from a gppd checkpoint.")
    ap.add_argument("--check", metavar="FILE.gppm", required=True,
                    help="build the module, load the weights, run one forward pass and "
                         "print the parameter count")
    args = ap.parse_args(argv)
    try:
        model = from_gppm(args.check)
    except (ValueError, OSError, KeyError, TypeError) as e:
        sys.stderr.write("gpp_torch: %s: %s\n" % (args.check, e))
        return 1
    with torch.no_grad():
        y = model(torch.zeros((2,) + model.input_shape))
    print("%s: params %d, input %s, logits %s%s" % (
        args.check, model.param_count(), list(model.input_shape), list(y.shape[1:]),
        ", normalised inside" if model.normalized else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
