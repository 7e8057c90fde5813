#!/usr/bin/python3
"""The C push loss (worker/gpp/push.c) against PyTorch autograd.

    /usr/bin/python3 tests/unit/gpp/push_torch_check.py BUILD/tests/unit/gpp/push_dump

Builds fixed inputs (seeded numpy), runs push_dump on them, recomputes
Sw, Sb, the Fisher ratios, every loss term and dL/dH in float64 with torch
(the eigen form through a Cholesky reduction and eigvalsh; the L_cov
denominator detached, as METHOD.md says, unless cov_exact) and compares.
Exit status 0 when everything matches.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

CONFIGS = [
    {"name": "sep diag", "separation": "diag", "alpha": 1.0},
    {"name": "cov frozen", "separation": "diag", "beta": 1.0},
    {"name": "cov exact", "separation": "diag", "beta": 1.0, "cov_exact": 1},
    {"name": "align", "separation": "diag", "gamma": 1.0},
    {"name": "sep eigen", "separation": "eigen", "alpha": 1.0},
    {"name": "sep eigen k=1", "separation": "eigen", "alpha": 1.0, "eigen_k": 1},
    {"name": "combined diag", "separation": "diag", "alpha": 0.1, "beta": 0.01,
     "gamma": 0.1},
    {"name": "combined eigen", "separation": "eigen", "alpha": 0.4, "beta": 0.7,
     "gamma": 0.2},
]


def make_input(seed, counts, M, sep=1.0):
    rng = np.random.default_rng(seed)
    C = len(counts)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    rng.shuffle(y)
    off = sep * rng.standard_normal((C, M))
    A = np.eye(M) + 0.5 * rng.standard_normal((M, M))
    H = off[y] + rng.standard_normal((len(y), M)) @ A
    H = np.abs(H) if seed % 2 else H          # one ReLU-like (non-negative) input
    H = H.astype(np.float32)
    top = np.zeros(M, dtype=int)
    top[rng.choice(M, size=max(1, M // 3), replace=False)] = 1
    return {"B": int(len(y)), "M": M, "C": C, "H": [float(v) for v in H.ravel()],
            "y": [int(v) for v in y], "top": [int(v) for v in top],
            "eps": 1e-5, "eigen_lambda": 1e-3, "configs": CONFIGS}


def torch_push(inp, cfg):
    B, M, C = inp["B"], inp["M"], inp["C"]
    eps, lam = inp["eps"], inp["eigen_lambda"]
    H = torch.tensor(np.array(inp["H"], dtype=np.float32).reshape(B, M).astype(np.float64),
                     requires_grad=True)
    y = torch.tensor(inp["y"])
    top = torch.tensor(inp["top"]).bool()
    onehot = torch.nn.functional.one_hot(y, C).double()
    cnt = onehot.sum(0)
    present = int((cnt > 0).sum())
    mc = (onehot.T @ H) / cnt.clamp(min=1)[:, None]
    mu = H.mean(0)
    E = H - mc[y]
    D = mc[y] - mu
    Sw = E.T @ E / B
    Sb = D.T @ D / B
    sw, sb = torch.diagonal(Sw), torch.diagonal(Sb)
    r = sb / (sw + eps)
    if cfg["separation"] == "diag":
        sep = -torch.log(r + eps).mean()
        k_used = 0
    else:
        # lambda = reg * tr(Sw) / M (+ reg * 1e-6): it scales with the features
        lam_t = lam * torch.trace(Sw) / M + lam * 1e-6
        L = torch.linalg.cholesky(Sw + lam_t * torch.eye(M))
        Li = torch.linalg.inv(L)
        A = Li @ Sb @ Li.T
        w = torch.linalg.eigvalsh(0.5 * (A + A.T))      # ascending
        nt = min(present - 1, M)
        k = cfg.get("eigen_k", 0)
        k = k if 0 < k < nt else nt
        sep = -w[M - nt:M - nt + k].mean()
        k_used = k

    def offd(S):
        return (S - torch.diag_embed(torch.diagonal(S))).pow(2).sum()

    num = offd(Sw) + offd(Sb)
    K = ((sw + sb) ** 2).sum()
    cov = num / (K if cfg.get("cov_exact", 0) else K.detach())
    R = r.sum()
    align = r[~top].sum() / R
    loss = cfg.get("alpha", 0) * sep + cfg.get("beta", 0) * cov + cfg.get("gamma", 0) * align
    loss.backward()
    return {"Sw": Sw.detach().numpy().ravel(), "Sb": Sb.detach().numpy().ravel(),
            "r": r.detach().numpy(), "loss": loss.item(), "sep": sep.item(),
            "cov": cov.item(), "align": align.item(), "cov_denom": K.item(),
            "eigen_k": k_used, "grad": H.grad.numpy().ravel()}


def close(name, a, b, rtol, atol_rel):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-30)
    err = np.abs(a - b) / (atol_rel * scale + rtol * np.abs(b))
    worst = float(err.max())
    ok = worst <= 1.0
    print("  %-28s %s  (worst %.2e of tolerance, max|ref| %.3e)"
          % (name, "ok" if ok else "MISMATCH", worst, scale))
    return ok


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    dump = sys.argv[1]
    # the last: fewer samples than features (Sw singular, as in a lenet5 push:
    # batch 64, M = 500), where only lambda keeps the eigen form finite
    cases = [(1, [5, 6, 6, 7], 8), (2, [3, 3, 4], 6), (3, [8, 8, 8, 8, 8], 20),
             (4, [3, 3, 3], 16)]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for seed, counts, M in cases:
            inp = make_input(seed, counts, M)
            path = os.path.join(tmp, "in-%d.json" % seed)
            with open(path, "w") as f:
                json.dump(inp, f)
            p = subprocess.run([dump, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=120)
            if p.returncode != 0:
                print("push_dump failed: %s" % p.stderr.decode())
                return 1
            out = json.loads(p.stdout)
            print("case seed=%d B=%d M=%d C=%d" % (seed, inp["B"], M, len(counts)))
            ref0 = torch_push(inp, CONFIGS[0])
            for key in ("Sw", "Sb", "r"):
                ok &= close(key, out[key], ref0[key], 1e-10, 1e-12)
            for cfg, res in zip(CONFIGS, out["results"]):
                ref = torch_push(inp, cfg)
                if res["eigen_k"] != ref["eigen_k"]:
                    print("  %s: eigen_k %d != %d" % (cfg["name"], res["eigen_k"], ref["eigen_k"]))
                    ok = False
                for key in ("loss", "sep", "cov", "align", "cov_denom"):
                    ok &= close("%s %s" % (cfg["name"], key), res[key], ref[key], 1e-8, 1e-12)
                # C returns float32 gradients: relative 1e-6 of each entry plus
                # 1e-6 of the largest
                ok &= close("%s grad" % cfg["name"], res["grad"], ref["grad"], 1e-6, 1e-6)
    print("all match" if ok else "MISMATCHES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
