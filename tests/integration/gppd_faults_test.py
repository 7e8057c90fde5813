#!/usr/bin/env python3
"""Fault tests of gppd (issue 6): a full disk, a locked database, duplicate
and late metric batches, non-retryable failures and retries.  A real gppd
on real SQLite files, real processes; the worker is a protocol-level fake
(raw frames, gppd_link_test.Raw) so each step happens exactly when the test
says.

usage: gppd_faults_test.py PATH/TO/gppd PATH/TO/worker GROUP

Groups:
  disk_full   DATA_DIR on a small tmpfs (mounted here: the tests run as root)
              filled to the last byte: writes answer 503 with the error shape
              and Retry-After, a worker's metric batch / result is not acked
              (the connection closes, the worker keeps its stage), an upload
              leaves no file; the daemon stays up; after the space returns the
              same requests succeed, the batch arrives exactly once, and the
              database, the artifacts and everything acknowledged before are
              intact (PRAGMA integrity_check, sha256 of every artifact, no
              temporary file).
  disk_full_worker
              the same with a real gpp-worker mid-stage: its batches come again
              after the space returns; attempt 1 finishes; each iteration once.
  acked_kill9 kill -9 right after gppd acknowledged jobs, a cancel, a token and
              a worker's batch: after the restart all of it is there.
  db_locked   another process holds the SQLite write lock (BEGIN EXCLUSIVE)
              longer than the busy timeout: writes answer 503 after it, reads
              still work (WAL), a metric batch is not acked; all recovers when
              the lock is released.
  duplicates  a batch sent twice (lost ack) is stored once; a lost worker's
              stage restarts as attempt 2 from its checkpoint and re-runs
              iterations: the API shows each iteration once, from the newest
              attempt; the old attempt coming back is told to cancel and its
              metrics and result are refused.
  retries     back-off doubles between retryable failures; out of memory and
              invalid data set fail the stage at once with the reason in
              GET /jobs/{id}; POST retry resumes from the last good stage
              (which is not run again) and the job succeeds.

Standard library only; run with /usr/bin/python3.
"""
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppd_http_test as H  # noqa: E402
import gppd_link_test as L  # noqa: E402
from gppd_link_test import (T_WELCOME, T_ASSIGN, T_BLOB, T_METRICS,  # noqa: E402
                            T_ACK, T_RESULT, T_FAIL, T_CANCEL, T_PING, T_BYE, frame, jframe)

GPU_DEV = [{'kind': 'cuda', 'index': 0, 'name': 'fake', 'memory_mb': 1}]


# ---- a fake worker -------------------------------------------------------------------

class Fake:
    """A worker speaking raw frames on one connection, with a heartbeat
    thread (pings every 0.3 s) so short grace windows do not take its stage."""

    def __init__(self, g, worker_id=None, running=None, name='test:fake'):
        self.g = g
        self.raw = L.Raw(g.link_port)
        self.lock = threading.Lock()
        self.frames = []            # every (type, payload) received
        self.closed = False
        self.stop = threading.Event()
        extra = {'name': name}
        if worker_id:
            extra['worker_id'] = worker_id
        if running:
            extra['running'] = {'stage_id': running[0], 'attempt': running[1]}
        fr, closed = self.raw.hello(g.token('worker'), devices=GPU_DEV, extra=extra)
        self.frames += fr
        self.closed = closed
        wel = [json.loads(pl) for t, pl in fr if t == T_WELCOME]
        assert wel and not closed, ('no welcome', fr, g.log()[-2000:])
        self.id = wel[0]['worker_id']
        self.pinger = threading.Thread(target=self._ping, daemon=True)
        self.pinger.start()

    def _ping(self):
        while not self.stop.wait(0.3):
            if not self.send(jframe(T_PING, {'time_ms': int(time.time() * 1000)})):
                return

    def send(self, data):
        with self.lock:
            return self.raw.send(data)

    def sendj(self, t, obj):
        return self.send(jframe(t, obj))

    def read(self, timeout):
        fr, closed = self.raw.frames(timeout=timeout)
        self.frames += fr
        self.closed = self.closed or closed
        return fr

    def wait(self, want, timeout=20, pred=None):
        """The payload (JSON decoded) of the next frame of type `want`."""
        deadline = time.time() + timeout
        seen = 0
        while time.time() < deadline:
            for t, pl in self.frames[seen:]:
                seen += 1
                if t == want:
                    obj = json.loads(pl) if pl[:1] == b'{' else pl
                    if pred is None or pred(obj):
                        return obj
            if self.closed:
                break
            self.read(0.2)
        raise AssertionError('no frame %d (closed=%s) in %r\n%s'
                             % (want, self.closed, self.frames[-10:], self.g.log()[-3000:]))

    def wait_closed(self, timeout=20):
        deadline = time.time() + timeout
        while not self.closed and time.time() < deadline:
            self.read(0.2)
        return self.closed

    def acked(self, stage_id, attempt, seq):
        return any(t == T_ACK and json.loads(pl) == {'stage_id': stage_id, 'attempt': attempt,
                                                     'seq': seq} for t, pl in self.frames)

    def metrics(self, stage_id, attempt, seq, points):
        self.sendj(T_METRICS, {'stage_id': stage_id, 'attempt': attempt, 'seq': seq,
                               'points': points})

    def upload(self, data):
        sha = hashlib.sha256(data).digest()
        self.send(frame(T_BLOB, sha + struct.pack('>QQ', 0, len(data)) + data))
        return sha.hex()

    def result(self, stage_id, attempt, data, summary=None):
        sha = self.upload(data)
        self.sendj(T_RESULT, {'stage_id': stage_id, 'attempt': attempt,
                              'output': {'sha256': sha, 'size': len(data)},
                              'summary': summary or {'params': 1000, 'flops': 2000,
                                                     'val_accuracy': 0.5}})
        return sha

    def close(self, bye=False):
        self.stop.set()
        if bye:
            self.sendj(T_BYE, {'reason': 'done'})
        self.raw.close()
        self.pinger.join(timeout=5)


def pts(its, name='loss', base=1.0):
    return [[i, name, base + i / 100.0, 1000 + i] for i in its]


def series(g, job_id, name='loss'):
    m = g.get('/api/v1/jobs/%s/metrics?name=%s&max_points=0' % (job_id, name))
    assert m.status == 200, m
    return m.json()['series'].get(name, {'iteration': [], 'attempt': [], 'value': []})


def wait_stage(g, job_id, idx, pred, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = g.job(job_id)['stages'][idx]
        if pred(st):
            return st
        time.sleep(0.05)
    raise AssertionError('stage %d: %s\n%s' % (idx, g.job(job_id), g.log()[-3000:]))


def wait_until(pred, timeout=10):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_503(r):
    err = H.assert_error(r, 503, 'unavailable')
    assert r.header('Retry-After') == '1', r.headers
    return err


def integrity(data_dir):
    """gppd stopped: the database passes integrity and foreign-key checks,
    every artifact hashes to its name, no temporary file is left."""
    con = sqlite3.connect(os.path.join(data_dir, 'gppd.db'))
    try:
        assert con.execute('PRAGMA integrity_check').fetchall() == [('ok',)]
        assert con.execute('PRAGMA foreign_key_check').fetchall() == []
    finally:
        con.close()
    adir = os.path.join(data_dir, 'artifacts')
    names = [n for n in os.listdir(adir) if n != 'tmp']
    for n in names:
        with open(os.path.join(adir, n), 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == n, ('corrupt artifact', n)
    assert os.listdir(os.path.join(adir, 'tmp')) == [], os.listdir(os.path.join(adir, 'tmp'))
    return names


def start_gpu_job(g, fake, **over):
    """Submit a gpu job (only the fake worker can take it) and return its
    first assignment."""
    job_id = g.submit(L.tiny_job(device='gpu', **over))
    a = fake.wait(T_ASSIGN, pred=lambda o: o['job_id'] == job_id)
    return job_id, a


# ---- disk full ---------------------------------------------------------------------

def fill(path):
    """Write a file until the file system has no byte left; returns its path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 4096, 1):
            buf = b'\0' * chunk
            while True:
                try:
                    os.write(fd, buf)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
        os.fsync(fd)
    finally:
        os.close(fd)
    st = os.statvfs(os.path.dirname(path))
    assert st.f_bavail == 0, st
    return path


def mount_tmpfs(where, size_mb):
    os.makedirs(where, exist_ok=True)
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%dm,mode=0700' % size_mb, 'tmpfs',
                        where], capture_output=True, text=True)
    assert p.returncode == 0, ('this test needs to mount a tmpfs (run as root)', p.stderr)


def umount(where):
    if subprocess.run(['umount', where], capture_output=True).returncode != 0:
        subprocess.run(['umount', '-l', where], capture_output=True)


def test_disk_full(g):
    L.register_tiny(g)
    fake = Fake(g)
    # acknowledged before the disk fills: a job, a token, a metric batch, an upload
    job_id, a = start_gpu_job(g, fake, iterations=0)
    sid = a['stage_id']
    fake.metrics(sid, 1, 1, pts(range(1, 6)))
    fake.wait(T_ACK, pred=lambda o: o['seq'] == 1)
    tok = g.post('/api/v1/tokens', {'name': 'before', 'role': 'user'})
    assert tok.status == 201, tok
    ckpt = b'checkpoint of stage 0, attempt 1' * 1000
    ckpt_sha = fake.upload(ckpt)
    before_job = g.submit(L.tiny_job(device='gpu', name='acked-before'))
    art = os.path.join(g.data_dir, 'artifacts', ckpt_sha)
    assert wait_until(lambda: os.path.exists(art)), 'the upload was not stored'

    filler = fill(os.path.join(os.path.dirname(g.data_dir), 'filler'))
    # HTTP writes: 503 with the error shape and Retry-After
    err = assert_503(g.post('/api/v1/jobs', L.tiny_job(name='while-full')))
    assert 'disk is full' in err['message'] or 'unavailable' in err['message'], err
    assert_503(g.post('/api/v1/tokens', {'name': 'during', 'role': 'user'}))
    assert_503(g.post('/api/v1/jobs/%s/cancel' % before_job, None))
    # reads still work
    assert g.job(job_id)['state'] == 'running'
    assert g.get('/api/v1/jobs').status == 200
    # a metric batch is not acked: the connection closes, the stage stays held
    fake.metrics(sid, 1, 2, pts(range(6, 11)))
    assert fake.wait_closed(), 'the connection stayed open after a batch that was not stored'
    assert not fake.acked(sid, 1, 2), 'a batch that was not stored was acked'
    fake.close()
    assert 'storage unavailable; closing the worker connection' in g.log(), g.log()[-3000:]
    # an upload fails and leaves nothing behind
    fake = Fake(g, worker_id=fake.id, running=(sid, 1))
    assert not any(t == T_CANCEL for t, _ in fake.frames), fake.frames
    big = os.urandom(300000)
    big_sha = fake.upload(big)
    assert fake.wait_closed(), 'the connection stayed open after a failed upload'
    fake.close()
    assert not os.path.exists(os.path.join(g.data_dir, 'artifacts', big_sha))
    tmp_dir = os.path.join(g.data_dir, 'artifacts', 'tmp')
    assert wait_until(lambda: os.listdir(tmp_dir) == []), os.listdir(tmp_dir)
    # a result (its checkpoint already uploaded) is not taken: the stage stays held
    fake = Fake(g, worker_id=fake.id, running=(sid, 1))
    fake.result(sid, 1, ckpt)
    assert fake.wait_closed(), 'the connection stayed open after a result that was not stored'
    fake.close()
    st = g.job(job_id)['stages'][0]
    assert st['state'] in ('assigned', 'running') and st['attempt'] == 1, st
    assert g.proc.poll() is None, 'gppd died'
    assert g.get('/api/v1/health', token=None).status == 200

    # the space returns: the same requests succeed
    os.unlink(filler)
    r = g.post('/api/v1/jobs', L.tiny_job(device='gpu', name='after-full'))
    assert r.status == 201, r
    after_job = r.json()['id']
    assert g.post('/api/v1/tokens', {'name': 'during', 'role': 'user'}).status == 201
    fake = Fake(g, worker_id=fake.id, running=(sid, 1))
    assert not any(t == T_CANCEL for t, _ in fake.frames), 'the stage was taken away'
    fake.metrics(sid, 1, 1, pts(range(1, 6)))      # resent: its ack may have been lost
    fake.metrics(sid, 1, 2, pts(range(6, 11)))
    fake.wait(T_ACK, pred=lambda o: o['seq'] == 2)
    assert fake.acked(sid, 1, 1)
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 11)) and set(s['attempt']) == {1}, s
    big_sha = fake.upload(big)
    fake.result(sid, 1, ckpt)
    job = g.wait_job(job_id, timeout=30)
    assert job['state'] == 'succeeded', job
    assert job['stages'][0]['output_sha256'] == ckpt_sha and job['stages'][0]['attempt'] == 1
    assert wait_until(lambda: os.path.exists(os.path.join(g.data_dir, 'artifacts', big_sha)))
    fake.close(bye=True)
    for j in (g.post('/api/v1/jobs/%s/cancel' % before_job, None),
              g.post('/api/v1/jobs/%s/cancel' % after_job, None)):
        assert j.status == 202, j
    names = {t['name'] for t in g.get('/api/v1/tokens').json()['tokens']}
    assert {'before', 'during'} <= names, names
    log = g.log()
    g.stop()
    arts = integrity(g.data_dir)
    assert ckpt_sha in arts and big_sha in arts, arts
    con = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    try:
        rows = con.execute('SELECT m.iteration FROM metrics m JOIN jobs j ON j.seq = m.job_seq'
                           ' WHERE j.id = ? ORDER BY m.iteration', (job_id,)).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == list(range(1, 11)), ('stored exactly once', rows)
    assert 'Sanitizer' not in log
    # everything is there after a restart too
    g.start()
    ids = {j['id'] for j in g.get('/api/v1/jobs?limit=500').json()['jobs']}
    assert {job_id, before_job, after_job} <= ids, ids
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 11)), s


def test_disk_full_worker(g):
    """A real gpp-worker mid-stage while the disk is full for a few seconds:
    its unacked batches come again after the space returns, the stage is
    not rescheduled, the job succeeds, every iteration is stored once."""
    L.register_tiny(g)
    worker = L.start_worker(g, 'w')
    try:
        g.wait_workers(1)
        job_id = g.submit(L.tiny_job(train={'epochs': 8}, iterations=0))
        L.wait_running(g, job_id, progress=0.15)
        filler = fill(os.path.join(os.path.dirname(g.data_dir), 'filler'))
        assert wait_until(lambda: 'storage unavailable; closing the worker connection'
                          in g.log(), timeout=30), g.log()[-3000:]
        time.sleep(2)
        os.unlink(filler)
        job = g.wait_job(job_id, timeout=180)
        assert job['state'] == 'succeeded', (job, g.log()[-4000:])
        st = job['stages'][0]
        assert st['attempt'] == 1, ('rescheduled', st)
        s = series(g, job_id)
        assert s['iteration'] == list(range(1, len(s['iteration']) + 1)), \
            ('gaps or doubles', s['iteration'])
        assert len(s['iteration']) > 20 and set(s['attempt']) == {1}, s
        worker.send_signal(L.signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        L.worker_log(g, 'w')
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    g.stop()
    integrity(g.data_dir)


# ---- acknowledged means durable -------------------------------------------------------

def test_acked_kill9(g):
    """Whatever gppd acknowledged (201/202 over HTTP, an ack to a worker) is
    there after a kill -9 that follows the acknowledgement at once."""
    L.register_tiny(g)
    fake = Fake(g)
    job_id, a = start_gpu_job(g, fake, iterations=0)
    sid = a['stage_id']
    jobs = [g.submit(L.tiny_job(name='acked-%d' % i)) for i in range(5)]
    assert g.post('/api/v1/jobs/%s/cancel' % jobs[2], None).status == 202
    tok = g.post('/api/v1/tokens', {'name': 'acked', 'role': 'user'})
    assert tok.status == 201, tok
    fake.metrics(sid, 1, 1, pts(range(1, 4001)))      # one full batch
    fake.wait(T_ACK, pred=lambda o: o['seq'] == 1)
    last = g.submit(L.tiny_job(name='acked-last'))
    g.kill9()
    fake.close()
    g.start()
    got = {j['id']: j for j in g.get('/api/v1/jobs?limit=500').json()['jobs']}
    assert set(jobs + [last, job_id]) <= set(got), (sorted(got), jobs, last)
    assert got[jobs[2]]['state'] == 'cancelled', got[jobs[2]]
    r = g.get('/api/v1/tokens').json()['tokens']
    t = [x for x in r if x['name'] == 'acked']
    assert t and t[0]['id'] == tok.json()['id'], r
    assert g.get('/api/v1/health', token=tok.json()['token']).status == 200
    assert g.get('/api/v1/jobs', token=tok.json()['token']).status == 200
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 4001)), len(s['iteration'])
    g.stop()
    integrity(g.data_dir)


# ---- database locked ---------------------------------------------------------------

def test_db_locked(g):
    L.register_tiny(g)
    fake = Fake(g)
    job_id, a = start_gpu_job(g, fake, iterations=0)
    sid = a['stage_id']
    fake.metrics(sid, 1, 1, pts(range(1, 4)))
    fake.wait(T_ACK, pred=lambda o: o['seq'] == 1)
    db = os.path.join(g.data_dir, 'gppd.db')
    holder = sqlite3.connect(db, timeout=10, isolation_level=None)
    holder.execute('BEGIN EXCLUSIVE')
    try:
        t0 = time.time()
        err = assert_503(g.post('/api/v1/jobs', L.tiny_job(name='while-locked')))
        waited = time.time() - t0
        assert 'busy' in err['message'], err
        assert waited >= 4.0, ('no busy timeout: answered after %.2f s' % waited)
        # known locked now: the next write fails fast instead of queueing
        t0 = time.time()
        assert_503(g.post('/api/v1/tokens', {'name': 'locked', 'role': 'user'}))
        assert time.time() - t0 < 3.0, ('a second write waited again', time.time() - t0)
        # reads are not blocked by a writer in WAL mode
        assert g.job(job_id)['state'] == 'running'
        assert g.get('/api/v1/jobs').status == 200
        fake.metrics(sid, 1, 2, pts(range(4, 7)))
        assert fake.wait_closed(timeout=30), 'the connection stayed open'
        assert not fake.acked(sid, 1, 2), 'a batch that was not stored was acked'
        fake.close()
        assert g.proc.poll() is None, 'gppd died'
    finally:
        holder.rollback()
        holder.close()
    r = g.post('/api/v1/jobs', L.tiny_job(device='gpu', name='after-lock'))
    assert r.status == 201, r
    assert g.post('/api/v1/tokens', {'name': 'locked', 'role': 'user'}).status == 201
    fake = Fake(g, worker_id=fake.id, running=(sid, 1))
    assert not any(t == T_CANCEL for t, _ in fake.frames), 'the stage was taken away'
    fake.metrics(sid, 1, 2, pts(range(4, 7)))
    fake.wait(T_ACK, pred=lambda o: o['seq'] == 2)
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 7)), s
    fake.result(sid, 1, b'locked checkpoint')
    assert g.wait_job(job_id, timeout=30)['state'] == 'succeeded'
    fake.close(bye=True)
    assert g.post('/api/v1/jobs/%s/cancel' % r.json()['id'], None).status == 202
    g.stop()
    integrity(g.data_dir)


# ---- duplicate and late metrics ------------------------------------------------------

def test_duplicates(g):
    L.register_tiny(g)
    a_w = Fake(g, name='test:a')
    job_id, a = start_gpu_job(g, a_w, iterations=0)
    sid = a['stage_id']
    assert a['attempt'] == 1
    # a batch sent twice (its ack lost): stored once, acked both times
    a_w.metrics(sid, 1, 1, pts(range(1, 5)))
    a_w.wait(T_ACK, pred=lambda o: o['seq'] == 1)
    a_w.metrics(sid, 1, 1, pts(range(1, 5)))
    a_w.metrics(sid, 1, 2, pts(range(5, 9)))
    a_w.wait(T_ACK, pred=lambda o: o['seq'] == 2)
    assert sum(1 for t, pl in a_w.frames if t == T_ACK and json.loads(pl)['seq'] == 1) == 2
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 9)) and set(s['attempt']) == {1}, s
    # worker a is lost (no bye, silent past the 2 s grace); b takes the stage
    # as attempt 2 and, resuming from a checkpoint taken at iteration 4,
    # computes 5..10 again (other values)
    a_id = a_w.id
    a_w.close()
    b_w = Fake(g, name='test:b')
    a2 = b_w.wait(T_ASSIGN, timeout=30, pred=lambda o: o['job_id'] == job_id)
    assert a2['attempt'] == 2 and a2['stage_id'] == sid, a2
    st = g.job(job_id)['stages'][0]
    assert st['worker'] == b_w.id and st['attempt'] == 2, st
    b_w.metrics(sid, 2, 1, pts(range(5, 11), base=2.0))
    b_w.wait(T_ACK, pred=lambda o: o['seq'] == 1 and o['attempt'] == 2)
    s = series(g, job_id)
    assert s['iteration'] == list(range(1, 11)), ('each iteration once', s)
    assert s['attempt'] == [1] * 4 + [2] * 6, s
    assert s['value'] == [1.0 + i / 100.0 for i in range(1, 5)] + \
        [2.0 + i / 100.0 for i in range(5, 11)], s
    csv = g.get('/api/v1/jobs/%s/metrics?format=csv&name=loss' % job_id).body.decode()
    rows = [r.split(',') for r in csv.strip().split('\n')[1:]]
    assert [int(r[3]) for r in rows] == list(range(1, 11)), csv
    assert [int(r[2]) for r in rows] == [1] * 4 + [2] * 6, csv
    # the superseded points of attempt 1 are kept in the database (not shown)
    con = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'), timeout=10)
    try:
        n = con.execute('SELECT count(*) FROM metrics m JOIN jobs j ON j.seq = m.job_seq'
                        ' WHERE j.id = ? AND m.attempt = 1', (job_id,)).fetchone()[0]
    finally:
        con.close()
    assert n == 8, n
    # the lost attempt comes back: told to cancel; its metrics and result refused
    a_back = Fake(g, worker_id=a_id, running=(sid, 1), name='test:a')
    c = a_back.wait(T_CANCEL)
    assert c == {'stage_id': sid, 'attempt': 1}, c
    a_back.metrics(sid, 1, 3, pts(range(9, 13), base=9.0))
    assert a_back.wait_closed(), 'metrics of a lost attempt were taken'
    assert not a_back.acked(sid, 1, 3)
    a_back.close()
    a_back = Fake(g, worker_id=a_id, name='test:a')
    a_back.result(sid, 1, b'stale result of attempt 1')
    assert a_back.wait_closed(), 'a result of a lost attempt was taken'
    a_back.close()
    assert 'what=not_held' in g.log()
    s2 = series(g, job_id)
    assert s2 == s, ('the lost attempt changed the metrics', s2)
    st = g.job(job_id)['stages'][0]
    assert st['state'] in ('assigned', 'running') and st['attempt'] == 2, st
    sha = b_w.result(sid, 2, b'result of attempt 2')
    job = g.wait_job(job_id, timeout=30)
    assert job['state'] == 'succeeded' and job['stages'][0]['output_sha256'] == sha, job
    b_w.close(bye=True)
    g.stop()
    integrity(g.data_dir)


# ---- retries -----------------------------------------------------------------------

def test_retries(g):
    L.register_tiny(g)
    w = Fake(g)
    # retryable failures: back-off doubles (2 s, then 4 s), attempts count up
    job_id, a = start_gpu_job(g, w, iterations=1, max_restarts=3)
    sid0 = a['stage_id']
    times = []
    for attempt in (1, 2):
        w.sendj(T_FAIL, {'stage_id': sid0, 'attempt': attempt, 'class': 'retryable',
                         'retryable': True, 'reason': 'flaky %d' % attempt})
        t0 = time.time()
        nxt = w.wait(T_ASSIGN, timeout=30, pred=lambda o, n=attempt + 1: o['attempt'] == n)
        times.append(time.time() - t0)
        assert nxt['stage_id'] == sid0, nxt
    assert 1.5 < times[0] < times[1] and times[1] > 3.5, ('back-off', times)
    st = g.job(job_id)['stages'][0]
    assert st['attempt'] == 3 and st['state'] in ('assigned', 'running'), st
    ckpt0 = b'stage 0 output'
    sha0 = w.result(sid0, 3, ckpt0, {'params': 1000, 'flops': 2000, 'val_accuracy': 0.5})
    a1 = w.wait(T_ASSIGN, pred=lambda o: o['index'] == 1)
    assert a1['attempt'] == 1 and a1['input']['sha256'] == sha0, a1
    # out of memory: not retried even when the worker says retryable
    t0 = time.time()
    w.sendj(T_FAIL, {'stage_id': a1['stage_id'], 'attempt': 1, 'class': 'oom',
                     'retryable': True, 'reason': 'CUDA out of memory (tried 2 GiB)'})
    job = g.wait_job(job_id, timeout=30)
    assert time.time() - t0 < 5, 'an out-of-memory failure waited for a back-off'
    assert job['state'] == 'failed', job
    assert job['reason'] == 'stage 1 (push) failed: oom: CUDA out of memory (tried 2 GiB)', job
    st = job['stages'][1]
    assert st['state'] == 'failed' and st['attempt'] == 1, st
    assert st['reason'] == 'oom: CUDA out of memory (tried 2 GiB)', st
    assert job['stages'][0]['state'] == 'succeeded', job['stages'][0]
    # retry: from the last good stage; stage 0 is not run again
    r = g.post('/api/v1/jobs/%s/retry' % job_id, None)
    assert r.status == 202, r
    a1b = w.wait(T_ASSIGN, pred=lambda o: o['index'] == 1 and o['attempt'] == 2)
    assert a1b['input']['sha256'] == sha0, a1b
    job = g.job(job_id)
    assert job['stages'][0]['state'] == 'succeeded' and job['stages'][0]['attempt'] == 3, job
    # an invalid data set: the same
    w.sendj(T_FAIL, {'stage_id': a1b['stage_id'], 'attempt': 2, 'class': 'invalid_data',
                     'retryable': True, 'reason': 'train-images-idx3-ubyte: bad magic'})
    job = g.wait_job(job_id, timeout=30)
    assert job['state'] == 'failed', job
    assert job['reason'] == 'stage 1 (push) failed: invalid_data: train-images-idx3-ubyte:' \
        ' bad magic', job
    assert job['stages'][1]['attempt'] == 2, job['stages'][1]
    r = g.post('/api/v1/jobs/%s/retry' % job_id, None)
    assert r.status == 202, r
    a1c = w.wait(T_ASSIGN, pred=lambda o: o['index'] == 1 and o['attempt'] == 3)
    sha1 = w.result(a1c['stage_id'], 3, b'stage 1 output')
    a2 = w.wait(T_ASSIGN, pred=lambda o: o['index'] == 2)
    assert a2['attempt'] == 1 and a2['input']['sha256'] == sha1, a2
    w.result(a2['stage_id'], 1, b'stage 2 output')
    job = g.wait_job(job_id, timeout=30)
    assert job['state'] == 'succeeded', job
    assert [s['attempt'] for s in job['stages']] == [3, 3, 1, 0], job['stages']
    assert job['stages'][3]['state'] == 'skipped', job['stages'][3]   # the only prune is size-first
    assert job['stages'][0]['output_sha256'] == sha0
    w.close(bye=True)
    g.stop()
    integrity(g.data_dir)


# ---- runner --------------------------------------------------------------------------

GROUPS = {
    'disk_full': test_disk_full,
    'disk_full_worker': test_disk_full_worker,
    'acked_kill9': test_acked_kill9,
    'db_locked': test_db_locked,
    'duplicates': test_duplicates,
    'retries': test_retries,
}


def run_one(name):
    fn = GROUPS[name]
    tmp = tempfile.mkdtemp(prefix='gppd-faults-')
    g = None
    mnt = None
    try:
        g = L.Daemon(tmp, grace=2 if name == 'duplicates' else 600)
        if name.startswith('disk_full'):
            mnt = os.path.join(tmp, 'mnt')
            mount_tmpfs(mnt, 8)
            g.data_dir = os.path.join(mnt, 'data')
        g.start()
        fn(g)
        g.stop()
        if os.environ.get('GPP_FAULTS_SHOW_LOG'):
            print(g.log())
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
        if mnt:
            umount(mnt)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    if len(argv) < 4 or argv[3] not in GROUPS:
        sys.stderr.write(__doc__ + '\ngroups: %s\n' % ' '.join(GROUPS))
        return 2
    H.GPPD = os.path.abspath(argv[1])
    L.WORKER = os.path.abspath(argv[2])
    os.environ['GPP_WORKER_BIN'] = L.WORKER
    t0 = time.time()
    ok = run_one(argv[3])
    print('%s %s (%.1f s)' % ('ok  ' if ok else 'FAIL', argv[3], time.time() - t0), flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
