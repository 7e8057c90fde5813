#!/usr/bin/python3
"""Bring your own model, measured: a network trained in PyTorch, handed to
gppd, compressed with the default job.

usage: /usr/bin/python3 tests/bench/byo_model.py BUILD_DIR [--model lenet5]
           [--epochs 6] [--seed 1] [--job '{"iterations": 4}'] [--threads 2]

1. `gpp-worker zoo MODEL` gives the network; deploy/python/gpp_torch.py builds
   it in PyTorch, which trains it on Fashion-MNIST (SGD, momentum 0.9, lr
   0.05 cosine, batch 64, pixels in [0, 1]) for --epochs epochs.
2. deploy/python/gppm.py saves it; it goes to a fresh gppd (loopback, one
   local worker with --threads threads) through POST /api/v1/models.
3. A job {"dataset": "fashion-mnist", "model": {"checkpoint": SHA}} plus --job
   runs; the script prints the before/after table from the job's summary and
   PyTorch's own test accuracy of the uploaded net (the evaluation stage must
   give the same number).
Prints markdown; nothing here is a pass/fail test (gppd-link-torch_model is).
"""
import argparse
import gzip
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'deploy', 'python'))
import gpp_torch  # noqa: E402
import gppm  # noqa: E402

FM = '/usr/share/datasets/fashion-mnist'


def idx(path):
    with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
        data = f.read()
    magic, n = struct.unpack_from('>II', data, 0)
    if magic == 0x803:
        r, c = struct.unpack_from('>II', data, 8)
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, r, c)
    return np.frombuffer(data, np.uint8, offset=8)


def load(split):
    pre = 'train' if split == 'train' else 't10k'
    pick = lambda kind: os.path.join(FM, sorted(f for f in os.listdir(FM) if f.startswith('%s-%s' % (pre, kind)))[0])
    x = torch.from_numpy(idx(pick('images')).astype(np.float32) / 255)
    return x, torch.from_numpy(idx(pick('labels')).astype(np.int64))


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, token, method, path, body=None, ctype='application/json'):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    h = {'Authorization': 'Bearer ' + token}
    if body is not None:
        h['Content-Type'] = ctype
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, json.loads(out) if out else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('build')
    ap.add_argument('--model', default='lenet5')
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--job', default='{}')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--save', help='keep the trained .gppm here')
    ap.add_argument('--gppm', help='skip training: upload this .gppm (made by --save)')
    a = ap.parse_args()
    worker = os.path.join(a.build, 'worker', 'gpp-worker')
    gppd = os.path.join(a.build, 'daemon', 'gppd')
    desc = json.loads(subprocess.check_output([worker, 'zoo', a.model, '--input', '1x28x28',
                                               '--classes', '10']))
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load('train')
    xte, yte = load('test')
    if a.gppm:
        model = gpp_torch.from_gppm(a.gppm)
        a.epochs = 0
    else:
        model = gpp_torch.build(desc)
    steps = max(1, a.epochs * (len(xtr) // 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0 = time.time()
    model.train()
    for ep in range(a.epochs):
        perm = torch.randperm(len(xtr))
        for k in range(len(xtr) // 64):
            i = perm[k * 64:(k + 1) * 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[i]), ytr[i]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        torch_acc = float((model(xte).argmax(1) == yte).double().mean())
    t_torch = time.time() - t0
    tmp = tempfile.mkdtemp(prefix='gpp-byo-')
    proc = None
    try:
        path = a.gppm or os.path.join(tmp, 'mine.gppm')
        if not a.gppm:
            gppm.save(path, {'network': desc},
                      {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')})
            if a.save:
                shutil.copy(path, a.save)
        port = free_port()
        env = dict(os.environ, GPP_WORKER_BIN=worker)
        proc = subprocess.Popen([gppd, '--listen', '127.0.0.1:%d' % port, '--worker-listen',
                                 '127.0.0.1:%d' % free_port(), '--data-dir', os.path.join(tmp, 'data'),
                                 '--local-workers', '1'], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, 'gppd.log'), 'w'))
        tok = os.path.join(tmp, 'data', 'admin.token')
        for _ in range(200):
            if os.path.exists(tok) and os.path.getsize(tok) > 0:
                break
            time.sleep(0.05)
        token = open(tok).read().strip()
        for _ in range(200):
            try:
                if call(port, token, 'GET', '/api/v1/health')[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        with open(path, 'rb') as f:
            st, up = call(port, token, 'POST', '/api/v1/models', f.read(), 'application/octet-stream')
        assert st in (200, 201), up
        spec = {'dataset': 'fashion-mnist', 'model': {'checkpoint': up['sha256']}}
        spec.update(json.loads(a.job))
        t1 = time.time()
        st, job = call(port, token, 'POST', '/api/v1/jobs', spec)
        assert st == 201, job
        while job['state'] not in ('succeeded', 'failed', 'cancelled'):
            time.sleep(1)
            job = call(port, token, 'GET', '/api/v1/jobs/' + job['id'])[1]
        t_job = time.time() - t1
        assert job['state'] == 'succeeded', json.dumps(job)[:2000]
        arch = call(port, token, 'GET', '/api/v1/jobs/%s/architecture' % job['id'])[1]
    finally:
        if proc:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    widths = {s['stage']: '-'.join(str(l['width']) for l in s['layers']) for s in arch['stages']}
    sm = job['summary']
    base = sm['baseline']
    print('Fashion-MNIST, %s trained in PyTorch %s (%s); PyTorch test accuracy %.2f %%; '
          'gppd job %s, %.0f s with one local worker of %d threads'
          % (a.model, torch.__version__, 'from %s' % a.gppm if a.gppm else
             '%d epochs, %.0f s, %d threads' % (a.epochs, t_torch, a.threads), 100 * torch_acc,
             json.dumps({k: v for k, v in spec.items() if k != 'model'}), t_job, a.threads))
    print()
    print('| model | stage | widths | params | × fewer | FLOPs | × fewer | val % | test % | Δ test |')
    print('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    for label, key in (('uploaded (evaluated by gppd)', 'baseline'), ('accuracy-first', 'accuracy_first'),
                       ('size-first', 'size_first')):
        m = sm[key]
        print('| %s | %d | %s | %s | %.1f | %s | %.1f | %.2f | %.2f | %+.2f |' % (
            label, m['stage'], widths.get(m['stage'], '?'), format(int(m['params']), ','),
            base['params'] / m['params'], format(int(m['flops']), ','), base['flops'] / m['flops'],
            100 * m['val_accuracy'], 100 * m['test_accuracy'],
            100 * (m['test_accuracy'] - base['test_accuracy'])))
    # data.val_from "auto": validation is 10 % of the test set, test the rest
    # (unless the job says otherwise); together they are the whole test set
    vf = json.loads(a.job).get('data', {}).get('val_from', 'auto')
    right = (base['val_accuracy'] * 1000 + base['test_accuracy'] * 9000 if vf in ('auto', 'test')
             else base['test_accuracy'] * 10000)
    same = abs(right - torch_acc * 10000) <= 2
    print()
    print('test images gppd\'s evaluation of the uploaded net gets right vs PyTorch\'s: %.0f vs %.0f (%s)'
          % (right, torch_acc * 10000, 'same' if same else 'DIFFERENT'))
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
