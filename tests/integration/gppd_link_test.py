#!/usr/bin/env python3
"""Integration tests of the worker link and the scheduler: a real gppd and
real gpp-worker processes (daemon mode) on loopback.

usage: gppd_link_test.py PATH/TO/gppd PATH/TO/worker GROUP [TEST...]

PATH/TO/worker runs gpp_worker_connect_main (gpp-worker --connect ...); gppd
finds it through GPP_WORKER_BIN for --local-workers.  Every test starts its
own gppd on 127.0.0.1 port 0 (HTTP and worker link) with a temporary data
folder and stops it with SIGTERM (exit 0: no leak report under ASan).  The
jobs are small (a learnable 28x28 data set of 1000 images made here, LeNet-5,
one epoch, one push/prune iteration).  A fake worker (raw frames, below)
plays the liar.  Standard library only; run with /usr/bin/python3.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppd_http_test as H  # noqa: E402  (the Gppd harness, assert_error)

WORKER = None
FINAL = ('succeeded', 'failed', 'cancelled')
SMALL = {'train': {'epochs': 1}, 'iterations': 1,
         'data': {'train_limit': 1000, 'test_limit': 500}}


# ---- set-up -------------------------------------------------------------------

def make_learnable_idx(folder, n_train=1000, n_test=500):
    """28x28 images of 10 classes: noise plus a bright square whose place is
    the class, in the four IDX files (not gzipped)."""
    os.makedirs(folder, exist_ok=True)
    dim = bytes(i >> 2 for i in range(256))
    seed = [12345]

    def noise():
        # a small LCG: the same bytes on every run
        out = bytearray(784)
        s = seed[0]
        for i in range(0, 784, 4):
            s = (s * 1103515245 + 12345) & 0x7fffffff
            out[i:i + 4] = s.to_bytes(4, 'little')
        seed[0] = s
        return bytearray(bytes(out).translate(dim))

    for split, count in (('train', n_train), ('t10k', n_test)):
        imgs, labels = bytearray(), bytearray()
        for i in range(count):
            c = i % 10
            px = noise()
            r0, c0 = 3 + 13 * (c // 5), 1 + 5 * (c % 5)
            for r in range(r0, r0 + 9):
                for k in range(c0, c0 + 4):
                    px[r * 28 + k] = 255
            imgs += px
            labels.append(c)
        with open(os.path.join(folder, '%s-images-idx3-ubyte' % split), 'wb') as f:
            f.write(struct.pack('>IIII', 0x803, count, 28, 28) + bytes(imgs))
        with open(os.path.join(folder, '%s-labels-idx1-ubyte' % split), 'wb') as f:
            f.write(struct.pack('>II', 0x801, count) + bytes(labels))
    return folder


class Daemon(H.Gppd):
    """gppd with the worker link on port 0; knows the link's port."""

    def __init__(self, tmp, local_workers=0, grace=None, link_port=None):
        args = []
        if link_port:
            args += ['--worker-listen', '127.0.0.1:%d' % link_port]
        if local_workers:
            args += ['--local-workers', str(local_workers)]
        if grace:
            args += ['--worker-grace', str(grace)]
        super().__init__(tmp, args=args)
        self.link_port = None

    def start(self):
        offset = len(self.log())
        super().start()
        deadline = time.time() + 30
        while time.time() < deadline:
            m = re.search(r'worker link listening"? worker=127\.0\.0\.1:(\d+)',
                          self.log()[offset:])
            if m:
                self.link_port = int(m.group(1))
                return self
            time.sleep(0.02)
        raise AssertionError('no worker link port in the log:\n' + self.log())

    def wait_workers(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ws = [w for w in self.get('/api/v1/workers').json()['workers']
                  if w['state'] in ('idle', 'busy')]
            if len(ws) >= n:
                return ws
            time.sleep(0.05)
        raise AssertionError('%d workers did not connect:\n%s' % (n, self.log()[-3000:]))

    def job(self, job_id):
        r = self.get('/api/v1/jobs/' + job_id)
        assert r.status == 200, r
        return r.json()

    def wait_job(self, job_id, states=FINAL, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = self.job(job_id)
            if j['state'] in states:
                return j
            time.sleep(0.1)
        raise AssertionError('job %s did not reach %s: %s\n%s'
                             % (job_id, states, self.job(job_id), self.log()[-4000:]))

    def submit(self, spec):
        r = self.post('/api/v1/jobs', spec)
        assert r.status == 201, r
        return r.json()['id']


def register_tiny(g):
    folder = make_learnable_idx(os.path.join(g.tmp, 'ds-tiny'))
    r = g.post('/api/v1/datasets', {'name': 'tiny', 'format': 'idx', 'path': folder})
    assert r.status == 201, r


def tiny_job(**over):
    spec = {'dataset': 'tiny', 'model': 'lenet5'}
    spec.update(json.loads(json.dumps(SMALL)))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k].update(v)
        else:
            spec[k] = v
    return spec


# ---- a worker that speaks raw frames (for the liar tests) ---------------------------

T_HELLO, T_WELCOME, T_ASSIGN, T_FETCH, T_BLOB, T_METRICS, T_ACK, T_LOG, T_RESULT, \
    T_FAIL, T_CANCEL, T_PING, T_PONG, T_BYE, T_DRAIN = range(1, 16)


def frame(t, payload):
    return struct.pack('>IB', len(payload), t) + payload


def jframe(t, obj):
    return frame(t, json.dumps(obj, separators=(',', ':')).encode())


class Raw:
    """One connection to the worker link."""

    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=10)
        self.buf = b''

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False

    def frames(self, timeout=5):
        """Read frames until the peer closes or `timeout` passes; returns
        (list of (type, payload), closed)."""
        out = []
        deadline = time.time() + timeout
        closed = False
        while time.time() < deadline:
            self.s.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            self.buf += chunk
            while len(self.buf) >= 5:
                n, t = struct.unpack('>IB', self.buf[:5])
                if len(self.buf) < 5 + n:
                    break
                out.append((t, self.buf[5:5 + n]))
                self.buf = self.buf[5 + n:]
        return out, closed

    def hello(self, token, devices=None, extra=None):
        msg = {'proto': 1, 'token': token, 'name': 'test:raw',
               'devices': devices or [{'kind': 'cuda', 'index': 0, 'name': 'fake', 'memory_mb': 1}],
               'threads': 1, 'labels': {}}
        msg.update(extra or {})
        self.send(jframe(T_HELLO, msg))
        deadline = time.time() + 10
        got = []
        while time.time() < deadline:
            fr, closed = self.frames(timeout=0.5)
            got += fr
            if any(t == T_WELCOME for t, _ in got) or closed:
                return got, closed
        return got, False

    def close(self):
        self.s.close()


def assert_closed(raw, why, g, what=None, timeout=10):
    fr, closed = raw.frames(timeout=timeout)
    assert closed, '%s: the connection stayed open (got %r)' % (why, fr)
    if what:
        assert re.search(r'worker connection refused.*what=%s' % re.escape(what), g.log()), \
            (why, g.log()[-3000:])
    raw.close()


# ---- tests ------------------------------------------------------------------------

def test_two_workers(g):
    """A job submitted over HTTP succeeds on two workers, its stages spread
    across both; its metrics, architecture and model (gppm, ONNX) are there."""
    register_tiny(g)
    workers = g.wait_workers(2)
    assert all(w['device'] == 'cpu' and w['threads'] >= 1 for w in workers), workers
    assert g.get('/api/v1/health', token=None).json()['workers'] == 2
    job_id = g.submit(tiny_job())
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    kinds = [s['kind'] for s in job['stages']]
    assert kinds == ['train', 'push', 'prune', 'finetune'], kinds
    # the only prune is the size-first model and had the final recovery
    ft = job['stages'][3]
    assert ft['state'] == 'skipped' and ft['output_sha256'] is None, ft
    assert ft['reason'] == 'the size-first model (stage 2) already had its final recovery', ft
    ran_on = {s['worker'] for s in job['stages'][:3]}
    assert len(ran_on) == 2, ('stages did not spread over both workers', job['stages'])
    for s in job['stages'][:3]:
        assert s['state'] == 'succeeded' and s['attempt'] == 1, s
        assert re.match(r'^[0-9a-f]{64}$', s['output_sha256']), s
        assert 0.0 <= s['summary']['val_accuracy'] <= 1.0 and s['summary']['params'] > 0, s
    base = job['summary']['baseline']
    assert base['stage'] == 0 and base['val_accuracy'] > 0.5, job['summary']   # learnable
    assert job['summary']['size_first']['params'] <= base['params'], job['summary']
    # metrics: per-iteration training numbers and one evaluation per stage
    m = g.get('/api/v1/jobs/%s/metrics?max_points=0' % job_id).json()
    for name in ('loss', 'lr', 'val_accuracy', 'test_accuracy', 'params'):
        assert name in m['names'], m['names']
    loss = m['series']['loss']
    assert sorted(set(loss['stage'])) == [0, 1, 2], loss['stage']
    assert loss['points'] > 20 and all(a == 1 for a in loss['attempt']), loss['points']
    ev = m['series']['val_accuracy']
    assert ev['stage'] == [0, 1, 2], ev
    assert abs(ev['value'][0] - base['val_accuracy']) < 1e-9, (ev, base)
    csv = g.get('/api/v1/jobs/%s/metrics?format=csv&name=loss' % job_id)
    assert csv.status == 200 and csv.body.count(b'\n') == loss['points'] + 1, csv
    # architecture: every stage's widths
    arch = g.get('/api/v1/jobs/%s/architecture' % job_id).json()
    assert [s['kind'] for s in arch['stages']] == kinds[:3], arch   # the finished ones
    names = [l['name'] for l in arch['baseline']['layers']]
    assert names == ['conv1', 'conv2', 'fc1', 'fc2'], names
    assert arch['stages'][2]['params'] == job['stages'][2]['summary']['params'], arch
    # the model: the latest good checkpoint, byte for byte; then ONNX
    r = g.get('/api/v1/jobs/%s/model' % job_id)
    assert r.status == 200 and r.header('Content-Type') == 'application/octet-stream', r
    assert hashlib.sha256(r.body).hexdigest() == job['stages'][2]['output_sha256']
    assert r.header('X-Checkpoint-Sha256') == job['stages'][2]['output_sha256'], r.headers
    assert 'stage-02-prune.gppm' in r.header('Content-Disposition'), r.headers
    r0 = g.get('/api/v1/jobs/%s/model?stage=0' % job_id)
    assert hashlib.sha256(r0.body).hexdigest() == job['stages'][0]['output_sha256']
    onnx = g.get('/api/v1/jobs/%s/model?format=onnx' % job_id)
    assert onnx.status == 200 and len(onnx.body) > 100000, onnx
    assert onnx.body[:1] == b'\x08' and b'logits' in onnx.body, onnx.body[:40]
    H.assert_error(g.get('/api/v1/jobs/%s/model?format=pt' % job_id), 400, 'malformed', 'format')
    H.assert_error(g.get('/api/v1/jobs/%s/model?stage=7' % job_id), 404, 'not_found', 'stage')
    # the workers, idle again, with the stage they ran gone from them
    ws = g.get('/api/v1/workers').json()['workers']
    assert sorted(w['id'] for w in ws) == sorted(ran_on), ws
    assert all(w['state'] == 'idle' and w['stage'] is None and w['heartbeat_age_s'] < 30
               for w in ws), ws
    logs = g.get('/api/v1/jobs/%s/logs' % job_id).json()['logs']
    assert any(l['source'].startswith('worker:') and 'prune' in l['message'] for l in logs), logs


def read_sse(g, job_id, last_id=None, out=None, timeout=120):
    """Read the job's event stream to its end; returns [(id, type, data)]."""
    import http.client
    conn = http.client.HTTPConnection('127.0.0.1', g.port, timeout=timeout)
    hdrs = {'Authorization': 'Bearer ' + g.token(), 'Accept': 'text/event-stream'}
    if last_id is not None:
        hdrs['Last-Event-ID'] = str(last_id)
    conn.request('GET', '/api/v1/jobs/%s/events' % job_id, headers=hdrs)
    r = conn.getresponse()
    assert r.status == 200, (r.status, r.read())
    assert r.getheader('Content-Type') == 'text/event-stream', r.getheaders()
    events = out if out is not None else []
    cur = {}
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip('\n')
        if line == '':
            if 'data' in cur:
                events.append((int(cur['id']), cur.get('event', 'message'), json.loads(cur['data'])))
            cur = {}
        elif not line.startswith(':'):
            k, _, v = line.partition(':')
            cur[k] = v[1:] if v.startswith(' ') else v
    conn.close()
    return events


def test_sse(g):
    """Event streams: many streams on a waiting job leave the API free; a
    running job's stage changes arrive live; Last-Event-ID resumes with no
    duplicates."""
    register_tiny(g)
    # a job nobody can run (device gpu): its stage waits with a reason
    gpu_job = g.submit(tiny_job(device='gpu'))
    socks = []
    for _ in range(24):
        s = socket.create_connection(('127.0.0.1', g.port), timeout=10)
        s.sendall(('GET /api/v1/jobs/%s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s'
                   '\r\n\r\n' % (gpu_job, g.token())).encode())
        socks.append(s)
    for s in socks:
        head = s.recv(4096)
        assert head.startswith(b'HTTP/1.1 200') and b'text/event-stream' in head, head
    t0 = time.time()
    for _ in range(20):
        assert g.get('/api/v1/health', token=None).status == 200
    assert time.time() - t0 < 5, 'the API starved behind 24 idle event streams'
    g.wait_workers(1)
    deadline = time.time() + 10
    while g.job(gpu_job)['stages'][0]['reason'] != 'waiting_for_gpu' and time.time() < deadline:
        time.sleep(0.1)
    assert g.job(gpu_job)['stages'][0]['reason'] == 'waiting_for_gpu', g.job(gpu_job)
    # a job that runs: follow it live
    job_id = g.submit(tiny_job())
    live = []
    t = threading.Thread(target=read_sse, args=(g, job_id, None, live))
    t.start()
    t.join(timeout=180)
    assert not t.is_alive(), 'the event stream did not end with the job'
    assert g.job(job_id)['state'] == 'succeeded', g.job(job_id)
    ids = [e[0] for e in live]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    types = {e[1] for e in live}
    assert {'job', 'stage', 'metrics', 'log'} <= types, types
    done = [(e[2]['stage'], e[2]['kind']) for e in live
            if e[1] == 'stage' and e[2]['state'] == 'succeeded']
    assert done == [(0, 'train'), (1, 'push'), (2, 'prune')], done
    assert live[-1][1] == 'job' and live[-1][2]['state'] == 'succeeded', live[-1]
    assert all(e[2]['job'] == job_id for e in live), live
    pts = [p for e in live if e[1] == 'metrics' for p in e[2]['points']]
    assert any(p['name'] == 'loss' for p in pts), pts[:5]
    # resume from the middle: exactly the rest, nothing twice
    mid = ids[len(ids) // 2]
    rest = read_sse(g, job_id, last_id=mid)
    assert [e[0] for e in rest] == [i for i in ids if i > mid], ([e[0] for e in rest], ids)
    assert read_sse(g, job_id, last_id=ids[-1]) == []
    H.assert_error(g.get('/api/v1/jobs/%s/events' % job_id, headers={'Last-Event-ID': 'x'}),
                   400, 'malformed')
    H.assert_error(g.get('/api/v1/jobs/jnosuchjob/events'), 404, 'not_found')
    for s in socks:
        s.close()
    r = g.post('/api/v1/jobs/%s/cancel' % gpu_job, None)
    assert r.status == 202, r


def test_cancel(g):
    """Cancel mid-stage: the worker stops within 2 s, the job is cancelled,
    and the worker takes the next job."""
    register_tiny(g)
    g.wait_workers(1)
    job_id = g.submit(tiny_job(train={'epochs': 200}))
    deadline = time.time() + 60
    while time.time() < deadline:
        st = g.job(job_id)['stages'][0]
        if st['state'] == 'running' and st['progress'] > 0:
            break
        time.sleep(0.05)
    assert st['state'] == 'running', (st, g.log()[-3000:])
    r = g.post('/api/v1/jobs/%s/cancel' % job_id, None)
    t0 = time.time()
    assert r.status == 202 and r.json()['state'] == 'cancelled', r
    stopped = None
    while time.time() - t0 < 10:
        ws = g.get('/api/v1/workers').json()['workers']
        if ws and all(w['state'] == 'idle' for w in ws):
            stopped = time.time() - t0
            break
        time.sleep(0.02)
    assert stopped is not None and stopped < 2.0, ('worker still busy after cancel', stopped,
                                                   g.log()[-3000:])
    assert re.search(r'stage failed.*class=cancelled', g.log()), g.log()[-3000:]
    job = g.job(job_id)
    assert job['state'] == 'cancelled' and job['stages'][0]['state'] == 'cancelled', job
    assert job['stages'][0]['attempt'] == 1, job
    H.assert_error(g.post('/api/v1/jobs/%s/cancel' % job_id, None), 409, 'conflict')
    # the worker is free for the next job
    nxt = g.submit(tiny_job(iterations=0))
    assert g.wait_job(nxt)['state'] == 'succeeded', g.log()[-3000:]


def test_fail(g):
    """A non-retryable failure (a data set path that does not exist) fails
    the job at once with the reason."""
    g.wait_workers(1)
    job_id = g.submit({'dataset': {'format': 'idx', 'path': '/nonexistent/gppd-test-data'},
                       'model': 'lenet5', 'iterations': 1})
    job = g.wait_job(job_id, timeout=60)
    assert job['state'] == 'failed', job
    assert 'invalid_data' in job['reason'] and '/nonexistent/gppd-test-data' in job['reason'], job
    st = job['stages'][0]
    assert st['state'] == 'failed' and st['attempt'] == 1, st   # not retried
    assert job['stages'][1]['state'] == 'cancelled' or job['stages'][1]['state'] == 'queued', job


def test_bad_token(g):
    """A worker with a bad token is refused (and exits); the daemon keeps
    serving and a good worker still connects."""
    bad = os.path.join(g.tmp, 'bad.token')
    with open(bad, 'w') as f:
        f.write('gpp_wrk_' + 'A' * 43 + '\n')
    p = subprocess.run([WORKER, '--connect', '127.0.0.1:%d' % g.link_port, '--token-file', bad,
                        '--cache-dir', os.path.join(g.tmp, 'wc-bad'), '--threads', '1'],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p
    assert 'refused the worker token' in p.stderr, p.stderr
    assert re.search(r'worker connection refused.*what=unauthenticated', g.log()), g.log()
    # the admin token is no worker token either
    raw = Raw(g.link_port)
    fr, closed = raw.hello(g.token('admin'))
    assert not any(t == T_WELCOME for t, _ in fr), fr
    byes = [json.loads(pl) for t, pl in fr if t == T_BYE]
    assert byes and byes[0]['reason'] == 'unauthenticated', fr
    assert_closed(raw, 'admin token', g)
    assert g.get('/api/v1/health', token=None).status == 200
    assert g.get('/api/v1/workers').json()['workers'] == []
    good = subprocess.Popen([WORKER, '--connect', '127.0.0.1:%d' % g.link_port, '--token-file',
                             os.path.join(g.data_dir, 'worker.token'), '--threads', '1',
                             '--cache-dir', os.path.join(g.tmp, 'wc-good'),
                             '--labels', 'site=test,rack=1'],
                            stderr=subprocess.PIPE, text=True)
    try:
        ws = g.wait_workers(1)
        assert ws[0]['labels'] == {'site': 'test', 'rack': '1'} and ws[0]['state'] == 'idle', ws
        # drain: an idle worker leaves at once, exit 0
        r = g.post('/api/v1/workers/%s/drain' % ws[0]['id'], None)
        assert r.status == 202 and r.json()['state'] == 'draining', r
        assert good.wait(timeout=30) == 0, good.stderr.read()
        deadline = time.time() + 10
        while time.time() < deadline:
            w = g.get('/api/v1/workers').json()['workers'][0]
            if w['state'] == 'gone':
                break
            time.sleep(0.05)
        assert w['state'] == 'gone', w
        H.assert_error(g.post('/api/v1/workers/%s/drain' % ws[0]['id'], None), 409, 'conflict')
        H.assert_error(g.post('/api/v1/workers/wnosuch/drain', None), 404, 'not_found')
    finally:
        if good.poll() is None:
            good.kill()
            good.wait()


def test_liar(g):
    """A worker that lies is disconnected and changes nothing: frames over
    the limit, unknown types, malformed payloads, metrics / results for a
    stage it does not hold, a blob whose sha256 is wrong.  A real job runs
    beside it and succeeds with attempt 1 everywhere."""
    register_tiny(g)
    g.wait_workers(1)
    job_id = g.submit(tiny_job(device='cpu', train={'epochs': 12}))
    deadline = time.time() + 60
    while g.job(job_id)['stages'][0]['state'] != 'running' and time.time() < deadline:
        time.sleep(0.05)
    assert g.job(job_id)['stages'][0]['state'] == 'running', g.log()[-3000:]
    tok = g.token('worker')
    stage0 = job_id + '.0'
    # before hello: a frame over the 64 KiB hello limit, and a frame that is not hello
    raw = Raw(g.link_port)
    raw.send(struct.pack('>IB', 64 * 1024 + 1, T_HELLO))
    assert_closed(raw, 'oversized hello', g, 'frame_too_large')
    raw = Raw(g.link_port)
    raw.send(jframe(T_PING, {'time_ms': 1}))
    assert_closed(raw, 'ping before hello', g, 'malformed')

    def liar():
        r = Raw(g.link_port)
        fr, closed = r.hello(tok)    # a "GPU" worker: the cpu job is never assigned to it
        assert not closed and any(t == T_WELCOME for t, _ in fr), fr
        return r

    raw = liar()
    raw.send(struct.pack('>IB', 4 * 1024 * 1024 + 1, T_METRICS))
    assert_closed(raw, 'frame over 4 MiB', g, 'frame_too_large')
    raw = liar()
    raw.send(frame(99, b'{}'))
    assert_closed(raw, 'unknown type', g, 'unknown_type')
    raw = liar()
    raw.send(frame(T_METRICS, b'{"stage_id": "x", nope'))
    assert_closed(raw, 'malformed JSON', g, 'malformed')
    raw = liar()
    raw.send(jframe(T_METRICS, {'stage_id': stage0, 'attempt': 1, 'seq': 1,
                                'points': [[1, 'liar_metric', 42.0, 1]]}))
    assert_closed(raw, 'metrics for a stage it does not hold', g, 'not_held')
    raw = liar()
    blob_sha = hashlib.sha256(b'the truth').digest()
    raw.send(frame(T_BLOB, blob_sha + struct.pack('>QQ', 0, 4) + b'lies'))
    assert_closed(raw, 'blob with a wrong sha256', g, 'checksum_mismatch')
    assert not os.path.exists(os.path.join(g.data_dir, 'artifacts', blob_sha.hex()))
    assert os.listdir(os.path.join(g.data_dir, 'artifacts', 'tmp')) == []
    raw = liar()
    good_blob = b'a real upload'
    raw.send(frame(T_BLOB, hashlib.sha256(good_blob).digest()
                   + struct.pack('>QQ', 0, len(good_blob)) + good_blob))
    raw.send(jframe(T_RESULT, {'stage_id': stage0, 'attempt': 1,
                               'output': {'sha256': hashlib.sha256(good_blob).hexdigest(),
                                          'size': len(good_blob)},
                               'summary': {'params': 1}}))
    assert_closed(raw, 'result for a stage it does not hold', g, 'not_held')
    raw = liar()
    raw.send(jframe(T_FAIL, {'stage_id': stage0, 'attempt': 1, 'class': 'invalid_data',
                             'retryable': False, 'reason': 'lies'}))
    assert_closed(raw, 'fail for a stage it does not hold', g, 'not_held')
    # the real job never noticed
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    assert all(s['attempt'] == 1 for s in job['stages'] if s['state'] != 'skipped'), job['stages']
    assert job['stages'][0]['summary']['params'] != 1, job['stages'][0]
    assert 'liar_metric' not in g.get('/api/v1/jobs/%s/metrics' % job_id).json()['names']
    assert g.get('/api/v1/health', token=None).status == 200


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_running(g, job_id, idx=0, progress=0.0, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = g.job(job_id)['stages'][idx]
        if st['state'] == 'running' and st['progress'] > progress:
            return st
        time.sleep(0.05)
    raise AssertionError('stage %d never ran: %s\n%s' % (idx, g.job(job_id), g.log()[-3000:]))


def test_reattach(g):
    """gppd killed (-9) mid-stage and started again: it reconciles, the
    worker reconnects within the grace window and re-attaches to the stage
    it still runs; nothing is rescheduled and no metric point is lost or
    stored twice."""
    register_tiny(g)
    wlog = open(os.path.join(g.tmp, 'worker.log'), 'w')
    worker = subprocess.Popen([WORKER, '--connect', '127.0.0.1:%d' % g.link_port, '--token-file',
                               os.path.join(g.data_dir, 'worker.token'), '--threads', '1',
                               '--cache-dir', os.path.join(g.tmp, 'wc')],
                              stderr=wlog)
    try:
        wid = g.wait_workers(1)[0]['id']
        job_id = g.submit(tiny_job(train={'epochs': 12}, iterations=0))
        wait_running(g, job_id, progress=0.2)
        g.kill9()
        time.sleep(0.3)
        g.start()
        job = g.wait_job(job_id)
        assert job['state'] == 'succeeded', (job, g.log()[-4000:])
        st = job['stages'][0]
        assert st['attempt'] == 1 and st['worker'] == wid, st          # not rescheduled
        log = g.log()
        assert 'reconciled stages left running' in log and 'worker re-attached' in log, log[-3000:]
        m = g.get('/api/v1/jobs/%s/metrics?name=loss&max_points=0' % job_id).json()
        its = m['series']['loss']['iteration']
        assert its == list(range(1, len(its) + 1)), ('gaps or doubles in the metrics', its)
        assert set(m['series']['loss']['attempt']) == {1}
        worker.send_signal(signal.SIGTERM)                 # drain: idle, so it leaves at once
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        wlog.close()
    with open(os.path.join(g.tmp, 'worker.log')) as f:
        wl = f.read()
    assert 'Sanitizer' not in wl and 'runtime error' not in wl, wl[-3000:]


def test_lost(g):
    """A worker killed (-9) mid-stage: after the grace window its stage goes
    back to the queue (worker_lost) and runs again on the restarted local
    worker as attempt 2; the job succeeds."""
    register_tiny(g)
    w = g.wait_workers(1)[0]
    job_id = g.submit(tiny_job(train={'epochs': 10}, iterations=0))
    wait_running(g, job_id, progress=0.1)
    pid = int(w['name'].rsplit(':', 1)[1])
    os.kill(pid, signal.SIGKILL)
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    st = job['stages'][0]
    assert st['attempt'] == 2 and st['worker'] != w['id'], st
    assert 'stage lost with its worker' in g.log() and 'local worker died' in g.log(), g.log()[-3000:]
    old = [x for x in g.get('/api/v1/workers').json()['workers'] if x['id'] == w['id']]
    assert old and old[0]['state'] == 'lost', old
    evs = read_sse(g, job_id)
    assert any(e[1] == 'stage' and e[2]['state'] == 'queued' and e[2]['reason'] == 'worker_lost'
               and e[2]['attempt'] == 1 for e in evs), evs
    # attempt 2 resumed from the last epoch checkpoint in the worker's cache
    # whose points gppd had acknowledged (or from the stage's input): every
    # iteration exactly once per name, no gap, the last ones from attempt 2
    # (gppd_lost_test.py kills right after a fresh checkpoint)
    n = None
    for name in ('loss', 'ce', 'batch_accuracy', 'lr'):
        m = g.get('/api/v1/jobs/%s/metrics?name=%s&max_points=0' % (job_id, name)).json()
        its, att = m['series'][name]['iteration'], m['series'][name]['attempt']
        n = n or its[-1]
        assert its == list(range(1, n + 1)) and n % 10 == 0, (name, 'gaps or doubles', its)
        assert att[-1] == 2 and att == sorted(att), (name, att)


def start_worker(g, name, labels=None):
    args = [WORKER, '--connect', '127.0.0.1:%d' % g.link_port, '--token-file',
            os.path.join(g.data_dir, 'worker.token'), '--threads', '1',
            '--cache-dir', os.path.join(g.tmp, 'wc-' + name), '--name', name]
    if labels:
        args += ['--labels', labels]
    log = open(os.path.join(g.tmp, 'worker-%s.log' % name), 'w')
    p = subprocess.Popen(args, stderr=log)
    log.close()
    return p


def worker_log(g, name):
    with open(os.path.join(g.tmp, 'worker-%s.log' % name)) as f:
        text = f.read()
    assert 'Sanitizer' not in text and 'runtime error' not in text, text[-3000:]
    return text


def wait_reason(g, job_id, want, timeout=15):
    deadline = time.time() + timeout
    while True:
        st = g.job(job_id)['stages'][0]
        if st['reason'] == want or time.time() > deadline:
            break
        time.sleep(0.1)
    assert st['state'] == 'queued' and st['reason'] == want, (want, st)


def test_drain(g):
    """SIGTERM on a worker drains it: it finishes its stage, takes nothing
    new and exits 0; the queued job waits (for a worker with its label) and
    runs on the next worker.  The waiting reasons say why: a matching worker
    is busy or none is connected (waiting_for_worker), workers are connected
    but none has the job's labels (waiting_for_labels)."""
    register_tiny(g)
    a = start_worker(g, 'a', 'pool=x')
    b = None
    try:
        g.wait_workers(1)
        first = g.submit(tiny_job(train={'epochs': 10}, iterations=0, labels={'pool': 'x'}))
        wait_running(g, first)
        second = g.submit(tiny_job(iterations=0, labels={'pool': 'x'}))
        other = g.submit(tiny_job(iterations=0, labels={'pool': 'y'}))
        wait_reason(g, second, 'waiting_for_worker')   # a matches, and is busy
        wait_reason(g, other, 'waiting_for_labels')    # a is connected, without pool=y
        a.send_signal(signal.SIGTERM)
        try:
            rc = a.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = 'still running'
        assert rc == 0, (rc, worker_log(g, 'a')[-3000:])
        assert g.job(first)['state'] == 'succeeded', (g.job(first), worker_log(g, 'a'))
        j2 = g.job(second)
        assert j2['state'] == 'queued' and j2['stages'][0]['reason'] == 'waiting_for_worker', j2
        assert 'SIGTERM: draining' in worker_log(g, 'a')
        wait_reason(g, other, 'waiting_for_worker')    # nobody connected now
        b = start_worker(g, 'b', 'pool=x')
        assert g.wait_job(second)['state'] == 'succeeded'
        assert g.job(second)['stages'][0]['worker'] != g.job(first)['stages'][0]['worker']
        wait_reason(g, other, 'waiting_for_labels')    # b is idle, without pool=y
        r = g.post('/api/v1/jobs/%s/cancel' % other, None)
        assert r.status == 202, r
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=30) == 0, worker_log(g, 'b')
        worker_log(g, 'b')
    finally:
        for p in (a, b):
            if p and p.poll() is None:
                p.kill()
                p.wait()


def test_restart_local(g):
    """SIGTERM on gppd mid-stage: the local worker gives the stage back, gppd
    exits 0; started again, the job finishes (the stage resumes from its
    mid-stage checkpoint in the worker's cache)."""
    register_tiny(g)
    g.wait_workers(1)
    job_id = g.submit(tiny_job(train={'epochs': 8}, iterations=0))
    wait_running(g, job_id, progress=0.3)
    g.stop()
    g.start()
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    assert job['stages'][0]['attempt'] == 2, job['stages'][0]
    assert 'the worker is stopping' in g.log(), g.log()[-3000:]


def test_stop_rules(g):
    """A stop rule ends a job early: with stop.target_params reached after
    the first of two prunes, the remaining push and prune are skipped, the
    final recovery (finetune) runs on that prune's output for
    prune.final_finetune_epochs, becomes the size-first and accuracy-first
    model, and the job succeeds with the reason; the skip is in the job's
    log before the job's end."""
    register_tiny(g)
    g.wait_workers(1)
    job_id = g.submit(tiny_job(iterations=2, stop={'target_params': 10 ** 9},
                               prune={'final_finetune_epochs': 2}))
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', job
    st = job['stages']
    assert [s['kind'] for s in st] == ['train', 'push', 'prune', 'push', 'prune', 'finetune'], st
    assert [s['state'] for s in st] == ['succeeded'] * 3 + ['skipped'] * 2 + ['succeeded'], job
    assert job['reason'].startswith('stopped early') and 'target' in job['reason'], job
    assert st[3]['reason'] == job['reason'] and st[4]['reason'] == job['reason'], st[3]
    assert job['stages_done'] == 6 and job['progress'] == 1, job
    # the recovery started from the prune's output, kept its widths, trained 2 epochs
    ft = st[5]
    assert ft['input_sha256'] == st[2]['output_sha256'], (ft, st[2])
    assert ft['output_sha256'] and ft['output_sha256'] != st[2]['output_sha256'], ft
    assert ft['summary']['from_stage'] == 2 and ft['summary']['finetune_epochs'] == 2, ft
    assert ft['summary']['params'] == st[2]['summary']['params'], (ft, st[2])
    for k in ('size_first', 'accuracy_first'):
        assert job['summary'][k]['stage'] == 5 and job['summary'][k]['kind'] == 'finetune', \
            job['summary']
    m = g.get('/api/v1/jobs/%s/metrics?stage=5&name=lr' % job_id).json()['series']['lr']
    assert len(m['iteration']) > 0, m
    # the model download is the recovered one
    r = g.get('/api/v1/jobs/%s/model' % job_id)
    assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == ft['output_sha256']
    logs = g.get('/api/v1/jobs/%s/logs' % job_id).json()['logs']
    assert any(l['message'] == job['reason'] and l['source'] == 'daemon' and l['stage'] == 2
               for l in logs), logs
    # the rule met by the last prune, which is size-first and had the final
    # recovery: the finetune stage is skipped, the job keeps the rule's reason
    job_id = g.submit(tiny_job(iterations=1, stop={'target_params': 10 ** 9},
                               prune={'final_finetune_epochs': 2}))
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', job
    st = job['stages']
    assert [s['state'] for s in st] == ['succeeded'] * 3 + ['skipped'], st
    assert st[3]['reason'] == 'the size-first model (stage 2) already had its final recovery', st
    assert job['reason'].startswith('stopped early') and 'target' in job['reason'], job
    assert job['summary']['size_first']['stage'] == 2, job['summary']


def test_recover_before_stop(g):
    """stop.recover_epochs through gppd: a prune whose validation accuracy
    after its fine-tune is below the bound (the baseline's less
    stop.max_accuracy_drop: a harsh cut, and a fine-tune learning rate too
    small to win anything back) trains one more epoch before the stop rule
    judges it; the API shows the recovery on the prune stage, and the rule
    judges what it gave: still below, the loop ends there."""
    register_tiny(g)
    g.wait_workers(1)
    job_id = g.submit(tiny_job(iterations=2, prune={'ratio': 0.7, 'final_finetune_epochs': 1,
                                                    'lr': 1e-6},
                               stop={'max_accuracy_drop': 0.05, 'recover_epochs': 1}))
    job = g.wait_job(job_id)
    assert job['state'] == 'succeeded', job
    st = job['stages']
    base = st[0]['summary']['val_accuracy']
    p = st[2]
    assert p['kind'] == 'prune' and p['state'] == 'succeeded', p
    s = p['summary']
    assert s.get("recover_epochs") == 1, (base, s)
    assert s['val_before_recover'] < base - 0.05, (base, s)
    assert s['finetune_epochs'] == 2, s     # prune.finetune_epochs 1, then 1 more
    assert s['val_accuracy'] < base - 0.05, (base, s)
    assert job['reason'].startswith('stopped early'), job
    assert ('%.4f' % s['val_accuracy']) in job['reason'], job   # judged after the recovery
    assert [x['state'] for x in st[3:5]] == ['skipped'] * 2, st
    # a stage that needed no recovery shows none
    assert 'recover_epochs' not in st[1]['summary'], st[1]


def wait_frame(raw, want, timeout=15):
    """Frames until one of type `want` arrives; returns (payload, all frames)."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        fr, closed = raw.frames(timeout=0.3)
        seen += fr
        for t, pl in fr:
            if t == want:
                return pl, seen
        assert not closed, ('connection closed', seen)
    raise AssertionError('no frame of type %d in %r' % (want, seen))


def test_retry(g):
    """The protocol seen from a worker (raw frames): the assignment names the
    data set files by sha256, fetch brings them byte for byte, a metrics
    batch is acked, a retryable failure sends the stage back with a back-off
    and max_restarts failures fail the job with the reason."""
    register_tiny(g)
    raw = Raw(g.link_port)
    fr, closed = raw.hello(g.token('worker'))   # a "GPU" worker
    assert any(t == T_WELCOME for t, _ in fr) and not closed, fr
    welcome = json.loads([pl for t, pl in fr if t == T_WELCOME][0])
    assert welcome['heartbeat_ms'] == 5000 and welcome['grace_s'] == 60, welcome
    job_id = g.submit(tiny_job(device='gpu', iterations=0, max_restarts=1))
    pl, _ = wait_frame(raw, T_ASSIGN)
    a = json.loads(pl)
    assert a['job_id'] == job_id and a['stage_id'] == job_id + '.0' and a['attempt'] == 1, a
    assert a['kind'] == 'train' and a['index'] == 0 and a['input'] is None, a
    assert a['spec']['device'] == 'gpu' and a['dataset']['name'] == 'tiny', a
    folder = os.path.join(g.tmp, 'ds-tiny')
    files = {f['name']: f for f in a['dataset']['files']}
    assert sorted(files) == sorted(os.listdir(folder)), files
    for name, f in files.items():
        with open(os.path.join(folder, name), 'rb') as fh:
            data = fh.read()
        assert f['sha256'] == hashlib.sha256(data).hexdigest() and f['size'] == len(data), f
    # fetch one file
    want = files['train-labels-idx1-ubyte']
    raw.send(jframe(T_FETCH, {'sha256': want['sha256']}))
    got = b''
    while len(got) < want['size']:
        pl, _ = wait_frame(raw, T_BLOB)
        sha, off, total = pl[:32], struct.unpack('>Q', pl[32:40])[0], struct.unpack('>Q', pl[40:48])[0]
        assert sha.hex() == want['sha256'] and off == len(got) and total == want['size']
        got += pl[48:]
    assert hashlib.sha256(got).hexdigest() == want['sha256']
    # a metrics batch is acked once stored
    raw.send(jframe(T_METRICS, {'stage_id': a['stage_id'], 'attempt': 1, 'seq': 1,
                                'points': [[1, 'loss', 2.5, 1], [2, 'loss', None, 2]]}))
    pl, _ = wait_frame(raw, T_ACK)
    assert json.loads(pl) == {'stage_id': a['stage_id'], 'attempt': 1, 'seq': 1}, pl
    m = g.get('/api/v1/jobs/%s/metrics?name=loss' % job_id).json()['series']['loss']
    assert m['iteration'] == [1, 2] and m['value'] == [2.5, None], m
    # a retryable failure: back to the queue with a back-off, then attempt 2
    raw.send(jframe(T_FAIL, {'stage_id': a['stage_id'], 'attempt': 1, 'class': 'retryable',
                             'retryable': True, 'reason': 'flaky disk'}))
    deadline = time.time() + 10
    while time.time() < deadline:
        st = g.job(job_id)['stages'][0]
        if st['state'] == 'queued':
            break
        time.sleep(0.05)
    assert st['state'] == 'queued' and st['reason'] == 'retry_backoff', st
    t0 = time.time()
    pl, _ = wait_frame(raw, T_ASSIGN)
    a2 = json.loads(pl)
    assert a2['attempt'] == 2 and time.time() - t0 > 1.0, (a2, time.time() - t0)
    raw.send(jframe(T_FAIL, {'stage_id': a2['stage_id'], 'attempt': 2, 'class': 'internal',
                             'retryable': True, 'reason': 'flaky disk again'}))
    job = g.wait_job(job_id, timeout=30)
    assert job['state'] == 'failed' and 'flaky disk again' in job['reason'], job
    assert 'gave up after 2 failed attempts' in job['reason'], job
    raw.send(jframe(T_BYE, {'reason': 'done'}))
    raw.close()


def readme_block():
    root = os.environ.get('GPP_SOURCE_ROOT') or os.path.join(os.path.dirname(
        os.path.abspath(__file__)), '..', '..')
    with open(os.path.join(root, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    m = re.search(r'<!-- curl-walkthrough -->\s*```(?:sh|bash)?\n(.*?)```\s*'
                  r'<!-- /curl-walkthrough -->', text, re.S)
    assert m, 'README.md has no block between <!-- curl-walkthrough --> markers'
    return m.group(1)


def test_walkthrough(g):
    """The README's curl walk-through, verbatim, against gppd with two local
    workers (fashion-mnist, registered at start when its package is there)."""
    block = readme_block()
    assert os.path.isdir('/usr/share/datasets/fashion-mnist'), \
        'the walk-through needs dataset-fashion-mnist (deploy/install-deps.sh)'
    g.wait_workers(2)
    work = os.path.join(g.tmp, 'walk')
    os.makedirs(work)
    env = dict(os.environ, GPPD='http://127.0.0.1:%d' % g.port, GPP_DATA=g.data_dir)
    p = subprocess.run(['bash', '-euo', 'pipefail', '-c', block], cwd=work, env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, (p.returncode, p.stdout[-3000:], p.stderr[-3000:],
                               g.log()[-3000:])
    m = re.search(r'submitted (j[a-z2-7]+)', p.stdout)
    assert m, p.stdout
    job = g.job(m.group(1))
    assert job['state'] == 'succeeded', job
    assert '"state":"succeeded"' in p.stdout and '%s succeeded' % job['id'] in p.stdout, p.stdout
    with open(os.path.join(work, 'model.gppm'), 'rb') as f:
        last = [s for s in job['stages'] if s['output_sha256']][-1]   # the latest good
        assert hashlib.sha256(f.read()).hexdigest() == last['output_sha256']
    assert os.path.getsize(os.path.join(work, 'model.onnx')) > 1000
    with open(os.path.join(work, 'metrics.csv')) as f:
        head = f.readline().strip()
    assert head == 'name,stage,attempt,iteration,value,time', head


def tensors_of(buf):
    """{name: raw bytes} of a .gppm's parameter tensors (deploy/python/gppm.py
    reads it), optimiser state left out."""
    sys.path.insert(0, os.path.join(os.environ['GPP_SOURCE_ROOT'], 'deploy', 'python'))
    import gppm
    return {k: v.tobytes() for k, v in gppm.loads(buf)[1].items() if not k.startswith('optim/')}


def upload(g, body, token='admin', ctype='application/octet-stream'):
    return g.request('POST', '/api/v1/models', body=body, token=token, ctype=ctype)


def trained_gppm(g, name, **over):
    """A .gppm trained on the tiny set by `gpp-worker run` (training only,
    the job spec's fields `over` on top), and the run's summary."""
    out = os.path.join(g.tmp, name)
    spec = tiny_job(dataset={'format': 'idx', 'path': os.path.join(g.tmp, 'ds-tiny')},
                    iterations=0, **over)
    path = out + '.json'
    with open(path, 'w') as f:
        json.dump(spec, f)
    p = subprocess.run([os.environ['GPP_WORKER_RUN'], 'run', path, '--out', out],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(os.path.join(out, 'stage-00-train.gppm'), 'rb') as f:
        trained = f.read()
    with open(os.path.join(out, 'summary.json')) as f:
        return trained, json.load(f)


def test_upload(g):
    """A trained network brought to gppd: POST /api/v1/models stores a .gppm
    (content-addressed, once), refuses what gppd could not run with the reason
    and keeps nothing of it; a job from {"checkpoint": sha256} skips training,
    starts from those weights and compresses them."""
    register_tiny(g)
    tiny = os.path.join(g.tmp, 'ds-tiny')
    # a checkpoint made outside this gppd: `gpp-worker run`, training only
    # (a low rate: short of 100 %, so a wrong normalisation would show)
    trained, run_sum = trained_gppm(g, 'run', train={'lr': 0.0001})
    sha = hashlib.sha256(trained).hexdigest()
    arts = os.path.join(g.data_dir, 'artifacts')

    def stored():
        return sorted(n for n in os.listdir(arts) if n != 'tmp'), os.listdir(os.path.join(arts, 'tmp'))

    # refused: what is not a runnable .gppm, and the request's own faults
    for bad, why in ((trained[:len(trained) // 2], 'truncated'),
                     (b'GPPM\r\n\x1a\n' + os.urandom(4000), 'checkpoint'),
                     (trained[:-9] + bytes([trained[-9] ^ 1]) + trained[-8:], 'checksum')):
        r = upload(g, bad)
        H.assert_error(r, 422, 'invalid_argument')
        assert why in r.json()['error']['message'], r.json()
        assert 'not a checkpoint gppd can run' in r.json()['error']['message'], r.json()
    assert stored() == ([], []), stored()
    H.assert_error(upload(g, trained, ctype='application/json'), 415, 'unsupported_media_type',
                   'Content-Type')
    H.assert_error(upload(g, trained, token=None), 401, 'unauthenticated')
    H.assert_error(upload(g, b''), 400, 'malformed')
    # a declared size over the limit is refused before a byte of it is read
    out = g.raw(('POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
                 'Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n'
                 % (g.token('admin'), 600 << 20)).encode())
    assert out.startswith(b'HTTP/1.1 413') and b'too_large' in out, out[:300]
    assert stored() == ([], []), stored()

    # stored once, by its sha256; a user token may upload
    user = g.post('/api/v1/tokens', {'name': 'ann', 'role': 'user'}).json()['token']
    r = upload(g, trained, token=user)
    assert r.status == 201, r
    got = r.json()
    assert got['sha256'] == sha and got['size'] == len(trained) and got['created'] is True, got
    assert got['input'] == [1, 28, 28] and got['classes'] == 10, got
    assert got['params'] == run_sum['baseline']['params'], (got, run_sum['baseline'])
    assert got['model'] == {'checkpoint': sha}, got
    r = upload(g, trained)
    assert r.status == 200 and r.json()['created'] is False and r.json()['sha256'] == sha, r
    assert stored() == ([sha], []), stored()

    # an upload may take longer than the 10 s a JSON request gets (here 12 s)
    sock = socket.create_connection(('127.0.0.1', g.port), timeout=30)
    sock.sendall(('POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
                  'Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n'
                  % (user, len(trained))).encode())
    pieces = 12
    for k in range(pieces):
        time.sleep(1.0)
        sock.sendall(trained[k * len(trained) // pieces:(k + 1) * len(trained) // pieces])
    reply = b''
    while b'\r\n\r\n' not in reply or not reply.rstrip().endswith(b'}'):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert reply.startswith(b'HTTP/1.1 200') and sha.encode() in reply, reply[:400]

    # a model that does not fit the data set is refused at submit
    five = os.path.join(g.tmp, 'ds-five')
    shutil.copytree(tiny, five)
    for split in ('train', 't10k'):
        fn = os.path.join(five, '%s-labels-idx1-ubyte' % split)
        with open(fn, 'rb') as f:
            lab = bytearray(f.read())
        lab[8:] = bytes(c % 5 for c in lab[8:])
        with open(fn, 'wb') as f:
            f.write(lab)
    assert g.post('/api/v1/datasets', {'name': 'five', 'format': 'idx', 'path': five}).status == 201
    r = g.post('/api/v1/jobs', {'dataset': 'five', 'model': {'checkpoint': sha}}, token=user)
    H.assert_error(r, 422, 'invalid_argument', 'model.checkpoint')
    assert 'has 10 classes but data set \'five\' has 5' in r.json()['error']['message'], r.json()
    r = g.post('/api/v1/jobs', {'dataset': 'tiny', 'model': {'checkpoint': '0' * 64}})
    H.assert_error(r, 422, 'invalid_argument', 'model.checkpoint')

    # a job from the upload: its train stage only evaluates the uploaded net
    # (the baseline), on the same split as `gpp-worker run` (validation from
    # the training set, as there; an upload's default takes it from the test
    # set: gppd-link-torch_model) and with the normalisation it was trained
    # with (the checkpoint's meta.normalize: data.normalize false does not
    # apply), so it scores what the run did
    spec = tiny_job(model={'checkpoint': sha}, data={'normalize': False, 'val_from': 'train'})
    r = g.post('/api/v1/jobs', spec, token=user)
    assert r.status == 201, r
    job = g.wait_job(r.json()['id'], timeout=200)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    assert [s['kind'] for s in job['stages']] == ['train', 'push', 'prune', 'finetune'], job['stages']
    ev = job['stages'][0]
    assert ev['input_sha256'] == sha and ev['summary'].get('evaluated_only') is True, (ev, g.log()[-3000:])
    base = job['summary']['baseline']
    assert base['stage'] == 0 and base['params'] == got['params'], base
    for k in ('val_accuracy', 'test_accuracy'):
        assert abs(base[k] - run_sum['baseline'][k]) < 1e-9, (k, base, run_sum['baseline'])
    assert 0.2 < base['val_accuracy'] < 0.97, base
    m = g.get('/api/v1/jobs/%s/metrics?max_points=0&stage=0' % job['id']).json()
    loss0 = m['series'].get('loss') or {'iteration': []}
    assert loss0['iteration'] == [], loss0              # no training step
    assert m['series']['val_accuracy']['stage'] == [0], m['series']['val_accuracy']
    # the stage's output is the uploaded weights (tensor for tensor): the
    # push that follows starts from exactly the model that was handed in
    out = g.get('/api/v1/jobs/%s/model?stage=0' % job['id']).body
    assert tensors_of(out) == tensors_of(trained)
    assert job['summary']['size_first']['params'] < got['params'], job['summary']


def test_models(g):
    """Uploaded models are listed, read and deleted per user: a user sees
    their own uploads (an admin everyone's); DELETE is refused while a queued
    or running job uses the checkpoint; the file goes with the last upload
    once no job names it, and the same bytes can be uploaded again."""
    register_tiny(g)
    a, b = trained_gppm(g, 'run-1', seed=1)[0], trained_gppm(g, 'run-2', seed=2)[0]
    sa, sb = hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()
    assert sa != sb
    arts = os.path.join(g.data_dir, 'artifacts')
    ann = g.post('/api/v1/tokens', {'name': 'ann', 'role': 'user'}).json()['token']
    bob = g.post('/api/v1/tokens', {'name': 'bob', 'role': 'user'}).json()['token']

    def listed(token, q=''):
        r = g.get('/api/v1/models' + q, token=token)
        assert r.status == 200, r
        return r.json()

    assert listed(ann) == {'models': [], 'next_cursor': None}
    assert upload(g, a, token=ann).status == 201
    assert upload(g, b, token=ann).status == 201
    r = upload(g, a, token=bob)                 # the same bytes: one file, two uploads
    assert r.status == 200 and r.json()['created'] is False, r
    mine = listed(ann)['models']
    assert [m['sha256'] for m in mine] == [sa, sb], mine
    m = mine[0]
    assert m['owner'] == 'ann' and m['size'] == len(a) and m['input'] == [1, 28, 28], m
    assert m['classes'] == 10 and m['params'] > 0 and m['jobs'] == 0, m
    assert m['model'] == {'checkpoint': sa} and m['created_at'].endswith('Z'), m
    assert [x['sha256'] for x in listed(bob)['models']] == [sa]
    everyone = listed('admin')['models']
    assert sorted((x['owner'], x['sha256']) for x in everyone) == \
        sorted([('ann', sa), ('ann', sb), ('bob', sa)]), everyone
    # pages of one, by cursor
    seen, q = [], '?limit=1'
    while True:
        page = listed('admin', q)
        assert len(page['models']) <= 1, page
        seen += [(x['owner'], x['sha256']) for x in page['models']]
        if page['next_cursor'] is None:
            break
        q = '?limit=1&cursor=' + page['next_cursor']
    assert seen == [(x['owner'], x['sha256']) for x in everyone], (seen, everyone)
    H.assert_error(g.get('/api/v1/models?cursor=bogus', token=ann), 400, 'malformed', 'cursor')
    H.assert_error(g.get('/api/v1/models?limit=0', token=ann), 400, 'malformed', 'limit')
    H.assert_error(g.get('/api/v1/models', token=None), 401, 'unauthenticated')

    # one upload: the owner's (upper case hex is the same name); not another user's
    r = g.get('/api/v1/models/' + sb.upper(), token=ann)
    assert r.status == 200 and r.json()['sha256'] == sb and r.json()['owner'] == 'ann', r
    H.assert_error(g.get('/api/v1/models/' + sb, token=bob), 404, 'not_found')
    assert g.get('/api/v1/models/' + sb).status == 200            # admin
    for bad in ('0' * 64, 'x' * 64, 'abc', '..%2F..%2Fgppd.db'):
        H.assert_error(g.get('/api/v1/models/' + bad, token=ann), 404, 'not_found')
        H.assert_error(g.request('DELETE', '/api/v1/models/' + bad, token=ann), 404,
                       'not_found')

    # a queued job uses it (no GPU worker: it waits): no one may delete it
    r = g.post('/api/v1/jobs', tiny_job(model={'checkpoint': sa}, device='gpu'), token=ann)
    assert r.status == 201, r
    jid = r.json()['id']
    assert g.get('/api/v1/models/' + sa, token=bob).json()['jobs'] == 1
    for who in (ann, bob, 'admin'):
        r = g.request('DELETE', '/api/v1/models/' + sa, token=who)
        H.assert_error(r, 409, 'conflict')
        assert 'in use by 1 queued or running job' in r.json()['error']['message'], r.json()
    assert [x['sha256'] for x in listed(ann)['models']] == [sa, sb]
    assert g.post("/api/v1/jobs/%s/cancel" % jid, None, token=ann).status == 202
    # ann's upload goes; bob's stays, and so does the file (bob, and the
    # cancelled job, still name it)
    r = g.request('DELETE', '/api/v1/models/' + sa, token=ann)
    assert r.status == 200 and r.json() == {'sha256': sa, 'deleted': True,
                                            'file_removed': False}, r
    H.assert_error(g.get('/api/v1/models/' + sa, token=ann), 404, 'not_found')
    H.assert_error(g.request('DELETE', '/api/v1/models/' + sa, token=ann), 404, 'not_found')
    assert g.get('/api/v1/models/' + sa, token=bob).status == 200
    r = g.request('DELETE', '/api/v1/models/' + sa, token=bob)
    assert r.status == 200 and r.json()['file_removed'] is False, r
    assert sa in os.listdir(arts)                 # the job's history keeps its input
    assert g.get('/api/v1/jobs/%s/model?stage=0' % jid).status in (404, 409)   # never ran

    # a model no job used: its last upload takes the file with it
    assert sb in os.listdir(arts)
    r = g.request('DELETE', '/api/v1/models/' + sb, token=ann)
    assert r.status == 200 and r.json()['file_removed'] is True, r
    assert sb not in os.listdir(arts)
    assert listed(ann)['models'] == [] and listed('admin')['models'] == []
    r = g.post('/api/v1/jobs', tiny_job(model={'checkpoint': sb}), token=ann)
    H.assert_error(r, 422, 'invalid_argument', 'model.checkpoint')
    # and it can come back
    r = upload(g, b, token=ann)
    assert r.status == 201 and r.json()['created'] is True, r
    assert sb in os.listdir(arts) and [x['sha256'] for x in listed(ann)['models']] == [sb]
    # survives a restart
    g.stop()
    g.start()
    assert [x['sha256'] for x in listed(ann)['models']] == [sb]

    # a per-user quota (upload-quota-mb): 3 MiB holds one of these (1.6 MiB)
    # but not two; what a user holds already is free to send again, and
    # another user has a quota of their own
    c = trained_gppm(g, 'run-3', seed=3)[0]
    sc = hashlib.sha256(c).hexdigest()
    g.stop()
    g.args += ['--upload-quota-mb', '3']
    g.start()

    def declared(size, token):
        """Only the headers: a size over the whole quota is refused from them."""
        return g.raw(('POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
                      'Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n'
                      % (token, size)).encode())

    def chunked(body, token):
        """No Content-Length: the handler checks the bytes that came."""
        head = ('POST /api/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
                'Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n'
                'Connection: close\r\n\r\n' % token).encode()
        parts = [head]
        for i in range(0, len(body), 1 << 16):
            piece = body[i:i + (1 << 16)]
            parts.append(b'%x\r\n' % len(piece) + piece + b'\r\n')
        parts.append(b'0\r\n\r\n')
        return g.raw(b''.join(parts))

    out = declared((3 << 20) + 1, bob)
    assert out.startswith(b'HTTP/1.1 413') and b'the quota is 3 MiB' in out, out[:300]
    r = upload(g, c, token=ann)
    H.assert_error(r, 413, 'too_large')
    assert 'over your upload quota: your uploaded models take 1.6 MiB of 3 MiB' in \
        r.json()['error']['message'], r.json()
    out = chunked(c, ann)                         # no declared size: the same
    assert out.startswith(b'HTTP/1.1 413') and b'over your upload quota' in out, out[:300]
    assert sc not in os.listdir(arts)                      # nothing kept of it
    r = upload(g, a, token=ann)      # stored for the cancelled job, but not hers
    H.assert_error(r, 413, 'too_large')
    assert sa in os.listdir(arts) and [x['sha256'] for x in listed(ann)['models']] == [sb]
    r = upload(g, b, token=ann)                  # hers already: no new bytes
    assert r.status == 200 and r.json()['created'] is False, r
    assert upload(g, c, token=bob).status == 201             # bob's own quota
    # room again after a delete
    assert g.request('DELETE', '/api/v1/models/' + sb, token=ann).status == 200
    r = upload(g, c, token=ann)
    assert r.status == 200 and [x['sha256'] for x in listed(ann)['models']] == [sc], r


def read_idx(path):
    import gzip
    op = gzip.open if path.endswith('.gz') else open
    with op(path, 'rb') as f:
        data = f.read()
    magic, n = struct.unpack_from('>II', data, 0)
    if magic == 0x803:
        rows, cols = struct.unpack_from('>II', data, 8)
        return data[16:], (n, rows, cols)
    return data[8:], (n,)


def test_torch_model(g):
    """The README's recipe: LeNet-5 trained in PyTorch (gpp_torch.build on
    `gpp-worker zoo lenet5`), saved with gppm.py, uploaded, compressed.
    gppd's evaluation of the uploaded net is PyTorch's own (pixels in [0, 1]:
    the checkpoint has no meta.normalize): data.val_from "auto" takes the
    validation images out of the test set (100 per class), so the images
    right on validation plus those right on test are PyTorch's count over
    the 10,000 test images."""
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(os.environ['GPP_SOURCE_ROOT'], 'deploy', 'python'))
    import gpp_torch
    import gppm
    fm = '/usr/share/datasets/fashion-mnist'
    assert os.path.isdir(fm), 'needs dataset-fashion-mnist (deploy/install-deps.sh)'

    def load(split):
        pre = 'train' if split == 'train' else 't10k'
        name = lambda kind: [f for f in os.listdir(fm) if f.startswith('%s-%s' % (pre, kind))][0]
        x, shape = read_idx(os.path.join(fm, name('images')))
        y, _ = read_idx(os.path.join(fm, name('labels')))
        x = torch.from_numpy(np.frombuffer(x, np.uint8).reshape(shape[0], 1, 28, 28).astype(np.float32) / 255)
        return x, torch.from_numpy(np.frombuffer(y, np.uint8).astype(np.int64))

    p = subprocess.run([os.environ['GPP_WORKER_RUN'], 'zoo', 'lenet5', '--input', '1x28x28',
                        '--classes', '10'], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    desc = json.loads(p.stdout)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = gpp_torch.build(desc)
    xtr, ytr = load('train')
    xte, yte = load('test')
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(300):
        i = torch.randint(0, 60000, (64,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xtr[i]), ytr[i]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        torch_acc = float((model(xte).argmax(1) == yte).double().mean())
    assert 0.6 < torch_acc < 0.9, torch_acc
    path = os.path.join(g.tmp, 'mine.gppm')
    gppm.save(path, {'network': desc},
              {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')})
    with open(path, 'rb') as f:
        body = f.read()
    r = upload(g, body)
    assert r.status == 201, r
    sha = r.json()['sha256']
    assert r.json()['params'] == sum(p.numel() for p in model.parameters()), r.json()

    g.wait_workers(1)
    spec = {'dataset': 'fashion-mnist', 'model': {'checkpoint': sha}, 'iterations': 1,
            'data': {'train_limit': 2000}, 'prune': {'final_finetune_epochs': 2}}
    job_id = g.submit(spec)
    job = g.wait_job(job_id, timeout=240)
    assert job['state'] == 'succeeded', (job, g.log()[-4000:])
    base = job['summary']['baseline']
    assert base['stage'] == 0 and job['stages'][0]['summary']['evaluated_only'] is True, job
    # argmax may flip on a float tie: allow two images
    right = base['val_accuracy'] * 1000 + base['test_accuracy'] * 9000
    assert abs(right - torch_acc * 10000) <= 2, (base, torch_acc)
    assert base['test_accuracy'] != base['val_accuracy'], base
    size = job['summary']['size_first']
    assert size['params'] < 0.6 * base['params'], job['summary']   # one prune at ratio 0.3


GROUPS = {
    'two_workers': (test_two_workers, 2),
    'sse': (test_sse, 1),
    'cancel': (test_cancel, 1),
    'fail': (test_fail, 1),
    'bad_token': (test_bad_token, 0),
    'liar': (test_liar, 1),
    'walkthrough': (test_walkthrough, 2),
    'reattach': (test_reattach, 0),
    'lost': (test_lost, 1),
    'drain': (test_drain, 0),
    'restart_local': (test_restart_local, 1),
    'stop_rules': (test_stop_rules, 1),
    'recover_before_stop': (test_recover_before_stop, 1),
    'retry': (test_retry, 0),
    'upload': (test_upload, 1),
    'models': (test_models, 0),
    'torch_model': (test_torch_model, 1),
}


def run_one(fn, local_workers):
    tmp = tempfile.mkdtemp(prefix='gppd-link-')
    g = None
    try:
        g = Daemon(tmp, local_workers=local_workers,
                   grace=2 if fn is test_lost else None,
                   link_port=free_port() if fn is test_reattach else None)
        g.start()
        fn(g)
        g.stop()
        return True
    except Exception:
        traceback.print_exc()
        if g:
            print('---- gppd log (tail) ----\n' + g.log()[-6000:])
        return False
    finally:
        if g and g.proc:
            g.proc.kill()
            g.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    global WORKER
    if len(argv) < 4 or argv[3] not in GROUPS:
        sys.stderr.write(__doc__ + '\ngroups: %s\n' % ' '.join(GROUPS))
        return 2
    H.GPPD = os.path.abspath(argv[1])
    WORKER = os.path.abspath(argv[2])
    os.environ['GPP_WORKER_BIN'] = WORKER
    fn, n = GROUPS[argv[3]]
    t0 = time.time()
    ok = run_one(fn, n)
    print('%s %s (%.1f s)' % ('ok  ' if ok else 'FAIL', fn.__name__, time.time() - t0),
          flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
