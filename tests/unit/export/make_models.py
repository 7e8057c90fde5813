#!/usr/bin/python3
"""Write the .gppm checkpoints the ONNX export test runs (seeded random
weights, Fashion-MNIST shapes [1, 28, 28] and 10 classes), with deploy/python/
gppm.py.  Nothing here is checked in: the test writes them to its temp dir.

    make_models.py OUTDIR          writes OUTDIR/<name>.gppm, prints the names
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "deploy", "python"))
import gppm  # noqa: E402

# Fashion-MNIST training-set statistics of x / 255 (what gpp_data_norm_compute gives).
FMNIST_NORMALIZE = {"mean": [0.2860406], "std": [0.3530242]}


def _conv(name, out, k, stride=1, pad=0, bias=True, inputs=None):
    l = {"type": "conv", "name": name, "out": out, "k": k, "stride": stride, "pad": pad,
         "bias": bias}
    if inputs:
        l["inputs"] = inputs
    return l


def _cbr(prefix, out, k, pad, inputs=None):
    """conv (no bias) -> bn -> relu, as the zoo's vgg-small and inception-base."""
    return [_conv(prefix, out, k, 1, pad, False, inputs),
            {"type": "bn", "name": prefix + "_bn"},
            {"type": "relu", "name": prefix + "_relu"}]


def lenet5():
    """The zoo's lenet5 (Caffe's LeNet: no ReLU after the convolutions)."""
    return [
        _conv("conv1", 20, 5),
        {"type": "maxpool", "name": "pool1", "k": 2, "stride": 2},
        _conv("conv2", 50, 5),
        {"type": "maxpool", "name": "pool2", "k": 2, "stride": 2},
        {"type": "flatten", "name": "flatten"},
        {"type": "fc", "name": "fc1", "out": 500},
        {"type": "relu", "name": "relu1"},
        {"type": "fc", "name": "fc2", "out": 10},
        {"type": "softmax-cross-entropy", "name": "loss"},
    ]


def vgg_small_bn():
    """vgg-small-like: conv-bn-relu blocks, a strided conv, global average
    pooling straight into an fc, and a batch norm after an fc (BatchNorm1d)."""
    return (_cbr("conv1", 16, 3, 1) + _cbr("conv2", 16, 3, 1) +
            [{"type": "maxpool", "name": "pool1", "k": 2, "stride": 2}] +
            [_conv("conv3", 32, 3, 2, 1, False), {"type": "bn", "name": "conv3_bn", "eps": 1e-3},
             {"type": "relu", "name": "conv3_relu"}] +
            [{"type": "global-avgpool", "name": "gap"},
             {"type": "fc", "name": "fc1", "out": 32},
             {"type": "bn", "name": "fc1_bn"},
             {"type": "relu", "name": "fc1_relu"},
             {"type": "fc", "name": "fc", "out": 10},
             {"type": "softmax-cross-entropy", "name": "loss"}])


def inception():
    """A stem, one basic Inception module with a 4-branch concat (1x1;
    1x1->3x3; 1x1->3x3->3x3; 3x3 max-pool->1x1), a padded max-pool, global
    average pooling and an fc."""
    layers = _cbr("stem", 16, 3, 1) + [{"type": "maxpool", "name": "stem_pool", "k": 2}]
    layers += _cbr("inc_b1", 8, 1, 0, ["stem_pool"])
    layers += _cbr("inc_b2a", 8, 1, 0, ["stem_pool"]) + _cbr("inc_b2b", 12, 3, 1)
    layers += (_cbr("inc_b3a", 4, 1, 0, ["stem_pool"]) + _cbr("inc_b3b", 6, 3, 1) +
               _cbr("inc_b3c", 6, 3, 1))
    layers += [{"type": "maxpool", "name": "inc_b4pool", "k": 3, "stride": 1, "pad": 1,
                "inputs": ["stem_pool"]}]
    layers += _cbr("inc_b4", 6, 1, 0)
    layers += [{"type": "concat", "name": "inc_concat",
                "inputs": ["inc_b1_relu", "inc_b2b_relu", "inc_b3c_relu", "inc_b4_relu"]},
               {"type": "maxpool", "name": "pool1", "k": 3, "stride": 2, "pad": 1},
               {"type": "global-avgpool", "name": "gap"},
               {"type": "fc", "name": "fc", "out": 10},
               {"type": "softmax-cross-entropy", "name": "loss"}]
    return layers


def avgpool_dropout():
    """Average pooling with padding (count_include_pad matters), dropout
    before and after an fc without bias; no softmax-cross-entropy layer."""
    return [
        _conv("conv1", 8, 5, 1, 2),
        {"type": "relu", "name": "relu1"},
        {"type": "avgpool", "name": "pool1", "k": 3, "stride": 2, "pad": 1},
        _conv("conv2", 16, 3),
        {"type": "relu", "name": "relu2"},
        {"type": "avgpool", "name": "pool2", "k": 2},
        {"type": "flatten", "name": "flatten"},
        {"type": "dropout", "name": "drop1", "p": 0.3},
        {"type": "fc", "name": "fc1", "out": 64, "bias": False},
        {"type": "relu", "name": "relu3"},
        {"type": "dropout", "name": "drop2"},
        {"type": "fc", "name": "fc2", "out": 10},
    ]


def mixed():
    """The rest of the mapping: three parallel branches (padded avgpool,
    padded maxpool, 1x1 conv) joined by a concat, dropout, global average
    pooling, an fc without bias and its batch norm, then a 1x1 conv on the
    fc's [N, C] output (an Unsqueeze in ONNX) flattened into the logits."""
    return [
        _conv("c1", 6, 3, 2, 1, False),
        {"type": "bn", "name": "b1", "eps": 1e-3},
        {"type": "relu", "name": "r1"},
        {"type": "avgpool", "name": "ap", "k": 3, "stride": 1, "pad": 1},
        {"type": "maxpool", "name": "mp", "k": 3, "stride": 1, "pad": 1, "inputs": ["r1"]},
        _conv("c2", 4, 1, inputs=["r1"]),
        {"type": "concat", "name": "cat", "inputs": ["ap", "mp", "c2"]},
        {"type": "dropout", "name": "d1", "p": 0.2},
        {"type": "global-avgpool", "name": "gap"},
        {"type": "fc", "name": "f1", "out": 16, "bias": False},
        {"type": "bn", "name": "b2"},
        {"type": "dropout", "name": "d2"},
        _conv("c3", 10, 1),
        {"type": "flatten", "name": "fl"},
        {"type": "softmax-cross-entropy", "name": "loss"},
    ]


# name -> (layers, normalize, with optimiser state)
MODELS = {
    "lenet5": (lenet5, True, True),
    "vgg-small-bn": (vgg_small_bn, True, False),
    "inception": (inception, True, False),
    "avgpool-dropout": (avgpool_dropout, True, False),
    "lenet5-raw": (lenet5, False, False),
    "mixed": (mixed, True, False),
}


def _shapes(layers, input_shape):
    """Tensor shapes per layer: {tensor name: shape}, by the netdesc rules."""
    shp = {"input": tuple(input_shape)}
    out = {}
    prev = "input"
    for l in layers:
        ins = l.get("inputs", [prev])
        C, H, W = shp[ins[0]]
        t, n = l["type"], l["name"]
        if t == "conv":
            k, s, p = l["k"], l.get("stride", 1), l.get("pad", 0)
            out[n + ".weight"] = (l["out"], C, k, k)
            if l.get("bias", True):
                out[n + ".bias"] = (l["out"],)
            shp[n] = (l["out"], (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
        elif t == "fc":
            out[n + ".weight"] = (l["out"], C * H * W)
            if l.get("bias", True):
                out[n + ".bias"] = (l["out"],)
            shp[n] = (l["out"], 1, 1)
        elif t == "bn":
            for sfx in ("weight", "bias", "running_mean", "running_var"):
                out["%s.%s" % (n, sfx)] = (C,)
            shp[n] = (C, H, W)
        elif t in ("maxpool", "avgpool"):
            k, p = l["k"], l.get("pad", 0)
            s = l.get("stride", k)
            shp[n] = (C, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
        elif t == "global-avgpool":
            shp[n] = (C, 1, 1)
        elif t == "flatten":
            shp[n] = (C * H * W, 1, 1)
        elif t == "concat":
            shp[n] = (sum(shp[i][0] for i in ins), H, W)
        else:
            shp[n] = (C, H, W)
        prev = n
    return out


def make_tensors(layers, input_shape, rng):
    """Seeded random tensors: He-normal weights, small biases, batch-norm
    affine parameters and running statistics away from the identity."""
    tensors = {}
    for name, shape in _shapes(layers, input_shape).items():
        if name.endswith(".weight") and len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith(".running_var"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(".weight"):           # bn gamma
            v = rng.uniform(0.5, 1.5, shape)
        else:                                    # biases, bn beta, running_mean
            v = rng.normal(0.0, 0.2, shape)
        tensors[name] = v.astype(np.float32)
    return tensors


def write_models(outdir, seed=20240611):
    """Write every model of MODELS to OUTDIR/<name>.gppm; returns {name: path}."""
    paths = {}
    for i, (name, (fn, normalize, optim)) in enumerate(MODELS.items()):
        rng = np.random.default_rng(seed + i)
        layers = fn()
        network = {"input": [1, 28, 28], "classes": 10, "layers": layers}
        tensors = make_tensors(layers, network["input"], rng)
        if optim:   # optimiser state is never exported
            for k in list(tensors):
                tensors["optim/" + k] = np.full(tensors[k].shape, 7.0, np.float32)
        meta = {"stage": "test", "model": name}
        if normalize:
            meta["normalize"] = FMNIST_NORMALIZE
        doc = {"format": "gppm", "network": network, "meta": meta, "state": {}}
        path = os.path.join(outdir, name + ".gppm")
        gppm.save(path, doc, tensors)
        paths[name] = path
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: make_models.py OUTDIR\n")
        sys.exit(2)
    for n, p in write_models(sys.argv[1]).items():
        print(n, p)
