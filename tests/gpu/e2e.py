#!/usr/bin/env python3
"""The whole product path on one device, for the GPU machine (issue 8):
gppd on loopback, one `gpp-worker --device DEVICE` connected to it, a small
job with "device": "gpu" (or "cpu" with --device cpu) submitted over HTTP,
run to the end.  Prints one line per stage and a last line
`e2e: succeeded ...` or `e2e: FAILED ...`; exits 0 only on success.

    tests/gpu/e2e.py BIN_DIR DATA_DIR [--device cuda:0] [--timeout 240]

BIN_DIR holds gppd and gpp-worker (or a build folder: daemon/gppd,
worker/gpp-worker); DATA_DIR holds Fashion-MNIST's
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (the 10,000 test
images, all the pack carries): they serve as the job's training set and as
its test set (a smoke test of the path, not a measurement).  Standard
library only: it runs with the GPU machine's python3.  Here (no GPU) it runs
with --device cpu in the integration suite (gpu-e2e-cpu), so the script
itself is checked on every build."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request


def main(argv):
    args = argv[1:]
    if len(args) < 2:
        sys.stderr.write(__doc__)
        return 2
    bindir, data = args[0], args[1]
    device, timeout = 'cuda:0', 240.0
    rest = args[2:]
    while rest:
        k = rest.pop(0)
        if k == '--device':
            device = rest.pop(0)
        elif k == '--timeout':
            timeout = float(rest.pop(0))
        else:
            sys.stderr.write('e2e: unknown option %s\n' % k)
            return 2
    tmp = tempfile.mkdtemp(prefix='gpp-e2e-')
    procs = []
    try:
        return run(bindir, data, device, timeout, tmp, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def find(bindir, name, subdirs):
    for d in ('',) + subdirs:
        p = os.path.join(bindir, d, name)
        if os.access(p, os.X_OK):
            return p
    raise SystemExit('e2e: no %s under %s' % (name, bindir))


def run(bindir, data, device, timeout, tmp, procs):
    t0 = time.time()
    gppd = find(bindir, 'gppd', ('daemon', 'bin'))
    worker = find(bindir, 'gpp-worker', ('worker', 'bin'))
    ds = os.path.join(tmp, 'fm')
    os.makedirs(ds)
    for kind in ('images-idx3', 'labels-idx1'):
        src = os.path.join(data, 't10k-%s-ubyte.gz' % kind)
        for split in ('train', 't10k'):
            shutil.copy(src, os.path.join(ds, '%s-%s-ubyte.gz' % (split, kind)))
    glog = os.path.join(tmp, 'gppd.log')
    with open(glog, 'w') as f:
        procs.append(subprocess.Popen(
            [gppd, '--listen', '127.0.0.1:0', '--worker-listen',
             '127.0.0.1:0', '--data-dir', os.path.join(tmp, 'data'), '--web-root',
             os.path.join(tmp, 'no-web')], stdout=f, stderr=f))
    http = link = None
    deadline = time.time() + 30
    while time.time() < deadline and not (http and link):
        text = open(glog, errors='replace').read()
        m = re.search(r'listening"? http=127\.0\.0\.1:(\d+)', text)
        http = m and int(m.group(1))
        m = re.search(r'worker link listening"? worker=127\.0\.0\.1:(\d+)', text)
        link = m and int(m.group(1))
        time.sleep(0.05)
    if not (http and link):
        return fail('gppd did not start', glog)
    token = open(os.path.join(tmp, 'data', 'admin.token')).read().strip()
    wlog = os.path.join(tmp, 'worker.log')
    with open(wlog, 'w') as f:
        procs.append(subprocess.Popen(
            [worker, '--connect', '127.0.0.1:%d' % link,
             '--token-file', os.path.join(tmp, 'data', 'worker.token'), '--device', device,
             '--cache-dir', os.path.join(tmp, 'cache')], stdout=f, stderr=f))

    def call(method, path, body=None):
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (http, path), method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header('Authorization', 'Bearer ' + token)
        if body is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b'null')
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b'null')

    st, ws = 0, None
    deadline = time.time() + 60
    while time.time() < deadline:
        if procs[-1].poll() is not None:
            return fail('gpp-worker exited with %d' % procs[-1].returncode, wlog)
        st, ws = call('GET', '/api/v1/workers')
        live = [w for w in (ws or {}).get('workers', []) if w['state'] in ('idle', 'busy')]
        if live:
            break
        time.sleep(0.1)
    else:
        return fail('the worker did not connect', wlog)
    print('e2e: worker %s devices %s' % (live[0]['name'], json.dumps(live[0]['devices'])))
    st, _ = call('POST', '/api/v1/datasets', {'name': 'fm', 'format': 'idx', 'path': ds})
    if st != 201:
        return fail('dataset registration answered %d' % st, glog)
    spec = {'name': 'e2e', 'dataset': 'fm', 'model': 'lenet5',
            'device': 'gpu' if device.startswith('cuda') else 'cpu',
            'iterations': 1, 'data': {'train_limit': 3000},
            'train': {'epochs': 1}, 'push': {'epochs': 1},
            'prune': {'finetune_epochs': 1, 'final_finetune_epochs': 1}}
    st, job = call('POST', '/api/v1/jobs', spec)
    if st != 201:
        return fail('submit answered %d: %s' % (st, job), glog)
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, job = call('GET', '/api/v1/jobs/' + job['id'])
        if job['state'] in ('succeeded', 'failed', 'cancelled'):
            break
        time.sleep(0.5)
    for s in job.get('stages', []):
        summ = s.get('summary') or {}
        print('e2e: stage %d %-8s %-9s worker %s val %s params %s' % (
            s.get('index', -1), s.get('kind'), s.get('state'), s.get('worker') or '-',
            summ.get('val_accuracy'), summ.get('params')))
    if job['state'] != 'succeeded':
        return fail('job %s (%s)' % (job['state'], job.get('reason')), wlog)
    sf = (job.get('summary') or {}).get('size_first') or {}
    base = (job.get('summary') or {}).get('baseline') or {}
    print('e2e: succeeded on %s in %.0f s: %s -> %s params, test %.4f -> %.4f' % (
        device, time.time() - t0, base.get('params'), sf.get('params'),
        base.get('test_accuracy', 0), sf.get('test_accuracy', 0)))
    return 0


def fail(why, log):
    try:
        tail = open(log, errors='replace').read()[-3000:]
    except OSError:
        tail = ''
    print('e2e: FAILED: %s\n---- %s (tail)\n%s' % (why, os.path.basename(log), tail))
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
