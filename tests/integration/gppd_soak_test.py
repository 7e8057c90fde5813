#!/usr/bin/env python3
"""Soak test of gppd (issue 6, "Load"): many small real jobs from several
users on real gpp-worker processes, some of which are killed with SIGKILL
and restarted, while many Server-Sent-Event clients follow the jobs and a
poller times the API.

usage: gppd_soak_test.py PATH/TO/gppd PATH/TO/gpp-worker full|short

full   200 jobs from 4 users, 8 workers (2 of them killed with SIGKILL and
       restarted at random moments, up to 8 times each), 100 SSE clients
       (suite 'soak', normal build)
short  40 jobs from 4 users, 4 workers (1 killed up to 4 times), 20 SSE
       clients: the leak check, run in the sanitizer build's integration
       suite; gppd runs with detect_leaks=1 and must stop on SIGTERM with
       exit 0 and no sanitizer report (its RSS is reported, not checked)

A job is train -> push -> prune -> push -> prune on a small inline network
(784-32-10) with 2000 images, so the daemon, the link and the store are
what is exercised, not the engine (a stage is ~20 ms of compute and about
a thousand metric points).  Half the jobs are queued before any worker
connects (so all SSE clients are open at once), the rest arrive while they
run.  Every 10th job also gets a client that goes away mid-stream for good.
At the end:
- every job succeeded, with its 5 stages succeeded;
- the metric points agree with what a worker sends: `gpp-worker run` of
  the same spec (no daemon) gives, per stage, the (name, iteration) keys;
  the API (max_points=0) returns exactly those per stage, and the database
  (read with sqlite3 after gppd stopped) holds no key twice per attempt,
  no point of an attempt that never was, and the same key set;
- every SSE client got, in order and without duplicates, every event of its
  job that the database holds, ending with the job's final "succeeded"
  event (every 10th client reconnects mid-job with Last-Event-ID);
- a GET /api/v1/jobs every 0.5 s always answered 200 within 2 s;
- gppd's resident memory (VmRSS, sampled every 0.25 s) did not keep growing:
  the last quarter's maximum <= 1.5 x the first quarter's maximum + 32 MiB
  (the SQLite page cache, which fills as the database grows);
- the server freed every event stream (gppd_event_streams back to 0), holds
  at most 2 more file descriptors than before the soak, and left no
  half-written upload in DATA_DIR/artifacts/tmp;
- gppd, the workers that were not killed, and the SSE clients ended cleanly.
One line of figures is printed at the end ("soak figures: {...}").
GPP_SOAK_JOBS=N runs N jobs instead; GPP_SOAK_TRACE=FILE writes the RSS and
latency samples; GPP_SOAK_SEED=N fixes the kill moments; GPP_SOAK_KEEP=1
keeps the folder of a failed run.
Standard library only; run with /usr/bin/python3.
"""
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppd_http_test as H  # noqa: E402  (the Gppd harness)
import gppd_link_test as L  # noqa: E402  (Daemon, the learnable data set)

WORKER = None
PROCS = []                 # every worker process started, for clean-up
FINAL = ('succeeded', 'failed', 'cancelled')

PROFILES = {
    'full': dict(jobs=200, users=4, workers=8, victims=2, kills=8, sse=100, reconnect_every=10,
                 deadline=420, grace=3, rss_check=True),
    'short': dict(jobs=40, users=4, workers=4, victims=1, kills=4, sse=20, reconnect_every=5,
                  deadline=420, grace=3, rss_check=False),
}

NET = [{'type': 'flatten'}, {'type': 'fc', 'out': 32}, {'type': 'relu'}, {'type': 'fc', 'out': 10}]
API_LATENCY_MAX = 2.0      # seconds, GET /api/v1/jobs
# the store's SQLite page cache (PRAGMA cache_size = -32768) fills as the
# database grows: that much growth is by design
RSS_FACTOR, RSS_SLACK_KB = 1.5, 32 * 1024


def job_spec(seed, dataset='tiny'):
    return {'name': 'soak-%d' % seed, 'dataset': dataset, 'model': NET, 'seed': seed,
            'max_restarts': 10,
            'train': {'epochs': 1, 'batch_size': 16},
            'push': {'epochs': 1},
            'prune': {'finetune_epochs': 1, 'final_finetune_epochs': 0,   # no finetune stage
                      'reconstruct_samples': 16, 'samples_per_class': 2},
            'iterations': 2,
            'stop': {'max_accuracy_drop': 1.0},
            'data': {'train_limit': 2000, 'test_limit': 100}}


STAGE_KINDS = ['train', 'push', 'prune', 'push', 'prune']
N_STAGES = len(STAGE_KINDS)
META_KEYS = {'type', 'stage', 'stage_index', 'phase', 'iteration', 'epoch'}


def oracle_keys(tmp, ds_folder):
    """Run the job with `gpp-worker run` (no daemon) and return, per stage
    index, the sorted list of (name, iteration) keys the stage emits."""
    spec = job_spec(1, dataset={'format': 'idx', 'path': ds_folder})
    path = os.path.join(tmp, 'oracle.json')
    with open(path, 'w') as f:
        json.dump(spec, f)
    out = os.path.join(tmp, 'oracle-out')
    p = subprocess.run([WORKER, 'run', path, '--out', out, '--threads', '1'],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    keys = {}
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        for line in f:
            rec = json.loads(line)
            for name in rec:
                if name not in META_KEYS:
                    keys.setdefault(rec['stage_index'], []).append((name, rec['iteration']))
    for idx in keys:
        ks = keys[idx]
        assert len(ks) == len(set(ks)), ('the engine emits a key twice', idx, ks)
        keys[idx] = sorted(ks)
    assert sorted(keys) == list(range(N_STAGES)), keys.keys()
    return keys


# ---- process helpers --------------------------------------------------------------

def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return None


def db_kb(data_dir):
    """The size of the database and its WAL, in kB (for the figures)."""
    total = 0
    for name in ('gppd.db', 'gppd.db-wal'):
        try:
            total += os.path.getsize(os.path.join(data_dir, name))
        except OSError:
            pass
    return total // 1024


class Worker:
    """One gpp-worker --connect process; restartable (same cache folder)."""

    def __init__(self, g, i):
        self.g, self.i = g, i
        self.cache = os.path.join(g.tmp, 'w%d' % i)
        self.log_path = os.path.join(g.tmp, 'worker-%d.log' % i)
        self.proc = None
        self.starts = 0
        self.kills = 0

    def start(self):
        log = open(self.log_path, 'a')
        log.write('==== start %d\n' % self.starts)
        log.flush()
        self.proc = subprocess.Popen(
            [WORKER, '--connect', '127.0.0.1:%d' % self.g.link_port,
             '--token-file', os.path.join(self.g.data_dir, 'worker.token'),
             '--device', 'cpu', '--threads', '1', '--cache-dir', self.cache,
             '--name', 'soak-%d' % self.i], stdout=log, stderr=log)
        PROCS.append(self.proc)
        log.close()
        self.starts += 1

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self):
        """SIGTERM (drain: it is idle, so it exits at once); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return 'timeout'

    def log(self):
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''


# ---- SSE clients: raw non-blocking sockets on one selector thread -------------------

class SseClient:
    """One event stream of one job.  HTTP/1.1 with chunked transfer decoding
    and SSE field parsing.  With `drop_after`, the client closes the socket
    after that many events and reconnects with Last-Event-ID (or, with
    `abandon`, goes away for good: the server must notice and free the stream)."""

    def __init__(self, job_id, token, drop_after=None, abandon=False):
        self.job_id, self.token = job_id, token
        self.drop_after = drop_after
        self.abandon = abandon        # with drop_after: close and never come back
        self.events = []              # (id, type, data)
        self.connects = 0
        self.status = None
        self.done = False             # the server ended the stream
        self.error = None
        self.first_byte = None
        self.last_recv = None
        self.heartbeats = 0
        self._reset()

    def _reset(self):
        self.sock = None
        self.raw = b''                # bytes before header parsing / undecoded chunks
        self.headers_done = False
        self.chunked = False
        self.body = b''               # de-chunked, not yet parsed into lines
        self.cur = {}
        self.eof_chunk = False

    def request(self):
        hdrs = ['GET /api/v1/jobs/%s/events HTTP/1.1' % self.job_id, 'Host: 127.0.0.1',
                'Authorization: Bearer ' + self.token, 'Accept: text/event-stream']
        if self.events:
            hdrs.append('Last-Event-ID: %d' % self.events[-1][0])
        return ('\r\n'.join(hdrs) + '\r\n\r\n').encode()

    def feed(self, data):
        """Take received bytes; returns 'drop' when the client wants to reconnect."""
        self.last_recv = time.time()
        self.raw += data
        if not self.headers_done:
            end = self.raw.find(b'\r\n\r\n')
            if end < 0:
                return None
            head = self.raw[:end].decode('latin-1').split('\r\n')
            self.raw = self.raw[end + 4:]
            self.status = int(head[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (h.partition(':') for h in head[1:])}
            if self.status != 200 or fields.get('content-type') != 'text/event-stream':
                self.error = 'bad reply: %r' % head
                return 'fail'
            self.chunked = fields.get('transfer-encoding', '').lower() == 'chunked'
            self.headers_done = True
        if self.chunked:
            while True:
                nl = self.raw.find(b'\r\n')
                if nl < 0:
                    break
                size = int(self.raw[:nl].split(b';')[0], 16)
                if size == 0:
                    self.eof_chunk = True
                    self.raw = b''
                    break
                if len(self.raw) < nl + 2 + size + 2:
                    break
                self.body += self.raw[nl + 2:nl + 2 + size]
                self.raw = self.raw[nl + 2 + size + 2:]
        else:
            self.body += self.raw
            self.raw = b''
        while True:
            nl = self.body.find(b'\n')
            if nl < 0:
                break
            line = self.body[:nl].decode('utf-8').rstrip('\r')
            self.body = self.body[nl + 1:]
            if line == '':
                if 'data' in self.cur:
                    self.events.append((int(self.cur['id']), self.cur.get('event', 'message'),
                                        json.loads(self.cur['data'])))
                    if self.drop_after and len(self.events) >= self.drop_after:
                        self.drop_after = None
                        self.cur = {}
                        return 'drop'
                self.cur = {}
            elif line.startswith(':'):
                if 'heartbeat' in line:
                    self.heartbeats += 1
            else:
                k, _, v = line.partition(':')
                self.cur[k] = v[1:] if v.startswith(' ') else v
        return 'end' if self.eof_chunk else None

    def final_event(self):
        for ev in reversed(self.events):
            if ev[1] == 'job':
                return ev
        return None


class SseHub:
    """Runs every SseClient on one thread with a selector."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.pending = []
        self.clients = []
        self.quit = False
        self.open_now = 0
        self.open_max = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def add(self, client):
        with self.lock:
            self.clients.append(client)
            self.pending.append(client)

    def _connect(self, c):
        c._reset()
        s = socket.create_connection(('127.0.0.1', self.port), timeout=10)
        s.sendall(c.request())
        s.setblocking(False)
        c.sock = s
        c.connects += 1
        self.sel.register(s, selectors.EVENT_READ, c)
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)

    def _close(self, c):
        self.sel.unregister(c.sock)
        c.sock.close()
        c.sock = None
        self.open_now -= 1

    def run(self):
        while not self.quit:
            with self.lock:
                todo, self.pending = self.pending, []
            for c in todo:
                try:
                    self._connect(c)
                except OSError as e:
                    c.error = 'connect: %s' % e
            for key, _ in self.sel.select(timeout=0.1):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    data = b''
                    c.error = 'recv: %s' % e
                verdict = c.feed(data) if data else 'end'
                if verdict == 'drop' and c.abandon:
                    self._close(c)
                    c.done = True
                elif verdict == 'drop':
                    self._close(c)
                    with self.lock:
                        self.pending.append(c)      # reconnect with Last-Event-ID
                elif verdict in ('end', 'fail'):
                    self._close(c)
                    c.done = True
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()

    def stop(self):
        self.quit = True
        self.thread.join(timeout=10)


# ---- monitors --------------------------------------------------------------------------

class Monitor:
    """Samples gppd's VmRSS every 0.25 s and times GET /api/v1/jobs every 0.5 s."""

    def __init__(self, g):
        self.g = g
        self.rss = []                # (t, kB, database kB)
        self.fds = []                # open file descriptors
        self.lat = []                # (t, seconds, status)
        self.errors = []
        self.quit = False
        self.threads = [threading.Thread(target=self.sample_rss, daemon=True),
                        threading.Thread(target=self.poll_api, daemon=True)]
        for t in self.threads:
            t.start()

    def sample_rss(self):
        pid = self.g.proc.pid
        while not self.quit:
            kb = rss_kb(pid)
            if kb is not None:
                self.rss.append((time.time(), kb, db_kb(self.g.data_dir)))
                self.fds.append(fd_count(pid))
            time.sleep(0.25)

    def poll_api(self):
        while not self.quit:
            t0 = time.time()
            try:
                r = self.g.get('/api/v1/jobs?limit=50')
                st = r.status
            except Exception as e:       # a refused or timed-out request is a failure
                st = 'error: %s' % e
            dt = time.time() - t0
            self.lat.append((t0, dt, st))
            time.sleep(max(0.0, 0.5 - dt))

    def stop(self):
        self.quit = True
        for t in self.threads:
            t.join(timeout=30)


def list_jobs(g):
    """Every job (admin view), following the cursor."""
    out, cursor = [], None
    while True:
        r = g.get('/api/v1/jobs?limit=500' + ('&cursor=' + cursor if cursor else ''))
        assert r.status == 200, r
        doc = r.json()
        out += doc['jobs']
        cursor = doc['next_cursor']
        if not cursor:
            return out


def metric_gauge(g, name):
    body = g.get('/metrics', token=None).body.decode()
    m = re.search(r'^%s (\d+)$' % re.escape(name), body, re.M)
    return int(m.group(1)) if m else None


# ---- the soak ------------------------------------------------------------------------------

def soak(g, prof):
    t_start = time.time()
    rnd = random.Random(int(os.environ.get('GPP_SOAK_SEED', '0')) or None)
    ds = L.make_learnable_idx(os.path.join(g.tmp, 'ds-tiny'), 2000, 100)
    oracle = oracle_keys(g.tmp, ds)
    r = g.post('/api/v1/datasets', {'name': 'tiny', 'format': 'idx', 'path': ds})
    assert r.status == 201, r
    users = []
    for u in range(prof['users']):
        r = g.post('/api/v1/tokens', {'name': 'soak-user%d' % u, 'role': 'user'})
        assert r.status == 201, r
        users.append(r.json()['token'])
    mon = Monitor(g)

    jobs = []                        # (job id, user index)
    jobs_lock = threading.Lock()
    submit_errors = []

    def submit_some(u, seeds, pause):
        for seed in seeds:
            try:
                r = g.post('/api/v1/jobs', job_spec(seed), token=users[u])
                if r.status != 201:
                    submit_errors.append((u, seed, repr(r)))
                    continue
                with jobs_lock:
                    jobs.append((r.json()['id'], u))
            except Exception as e:
                submit_errors.append((u, seed, repr(e)))
            if pause:
                time.sleep(rnd.uniform(0, pause))

    def submit_wave(first, count, pause):
        nu = prof['users']
        ts = [threading.Thread(target=submit_some,
                               args=(u, range(first + u, first + count, nu), pause))
              for u in range(nu)]
        for t in ts:
            t.start()
        return ts

    # 1. the first half is queued while no worker is connected, and one SSE
    # client follows each of the first `sse` jobs: all streams are open at once
    half = prof['jobs'] // 2
    for t in submit_wave(1, half, 0):
        t.join()
    assert not submit_errors, submit_errors
    assert len(jobs) == half, len(jobs)
    fds_before = fd_count(g.proc.pid)
    hub = SseHub(g.port)
    n_sse = min(prof['sse'], half)
    followed = {}
    abandoning = []
    for k, (job_id, u) in enumerate(jobs[:n_sse]):
        drop = 3 + k % 7 if k % prof['reconnect_every'] == 0 else None
        c = SseClient(job_id, users[u], drop_after=drop)
        followed[job_id] = c
        hub.add(c)
        if k % prof['reconnect_every'] == prof['reconnect_every'] // 2:
            # one more client on this job that goes away mid-stream for good
            a = SseClient(job_id, users[u], drop_after=2 + k % 5, abandon=True)
            abandoning.append(a)
            hub.add(a)
    deadline = time.time() + 30
    while time.time() < deadline and metric_gauge(g, 'gppd_event_streams') < n_sse:
        time.sleep(0.1)
    streams_open = metric_gauge(g, 'gppd_event_streams')
    assert streams_open >= n_sse, ('event streams open', streams_open)
    t_streams = time.time()

    # 2. the workers; the second half comes while they run
    workers = [Worker(g, i) for i in range(prof['workers'])]
    for w in workers:
        w.start()
    g.wait_workers(prof['workers'], timeout=60)
    t_workers = time.time()
    wave2 = submit_wave(1 + half, prof['jobs'] - half, 0.5)

    # 3. the victims: SIGKILL at random moments, restarted after a random pause
    victims = workers[:prof['victims']]
    kill_log = []
    stop_killing = threading.Event()

    def killer(w):
        for _ in range(prof['kills']):
            if stop_killing.wait(rnd.uniform(2.0, 8.0)):
                return
            w.kill9()
            kill_log.append((round(time.time() - t_start, 2), w.i))
            if stop_killing.wait(rnd.uniform(0.1, 1.5)):
                w.start()
                return
            w.start()

    killers = [threading.Thread(target=killer, args=(w,), daemon=True) for w in victims]
    for t in killers:
        t.start()

    # 4. wait for every job to finish
    for t in wave2:
        t.join()
    assert not submit_errors, submit_errors
    assert len(jobs) == prof['jobs'], len(jobs)
    deadline = t_start + prof['deadline']
    done = {}
    while time.time() < deadline:
        done = {j['id']: j['state'] for j in list_jobs(g) if j['state'] in FINAL}
        if len(done) == prof['jobs']:
            break
        if prof['jobs'] - len(done) < prof['jobs'] // 10:
            stop_killing.set()
        time.sleep(0.5)
    stop_killing.set()
    for t in killers:
        t.join(timeout=30)
    t_done = time.time()
    if len(done) != prof['jobs']:
        left = [j for j, _ in jobs if j not in done][:5]
        raise AssertionError('%d of %d jobs finished in %d s; e.g. %s' % (
            len(done), prof['jobs'], prof['deadline'],
            [g.job(j) for j in left[:2]]))
    failed = {j: s for j, s in done.items() if s != 'succeeded'}
    assert not failed, [g.job(j) for j in list(failed)[:3]]

    # 5. the SSE clients end with their jobs
    deadline = time.time() + 30
    while time.time() < deadline and not all(c.done for c in followed.values()):
        time.sleep(0.1)
    hub.stop()
    not_done = [c.job_id for c in followed.values() if not c.done]
    assert not not_done, ('event streams still open after their jobs finished', not_done[:5])
    errors = [(c.job_id, c.error) for c in list(followed.values()) + abandoning if c.error]
    assert not errors, errors[:5]
    assert all(a.done and a.connects == 1 for a in abandoning), 'an abandoning client'
    # the server freed every stream, the abandoned ones too
    deadline = time.time() + 30
    while time.time() < deadline and metric_gauge(g, 'gppd_event_streams') != 0:
        time.sleep(0.2)
    assert metric_gauge(g, 'gppd_event_streams') == 0, metric_gauge(g, 'gppd_event_streams')

    # 6. per job over the API: stages, metrics
    api_points = 0
    attempts_over_1 = 0
    for job_id, u in jobs:
        r = g.get('/api/v1/jobs/' + job_id, token=users[u])
        assert r.status == 200, r
        j = r.json()
        assert j['state'] == 'succeeded', j
        assert [s['kind'] for s in j['stages']] == STAGE_KINDS, j['stages']
        for s in j['stages']:
            assert s['state'] == 'succeeded' and s['output_sha256'], (job_id, s)
            attempts_over_1 += s['attempt'] > 1
        r = g.get('/api/v1/jobs/%s/metrics?max_points=0' % job_id, token=users[u])
        assert r.status == 200, r
        series = r.json()['series']
        got = {}
        for name, ser in series.items():
            assert not ser['truncated'], (job_id, name)
            for st, it in zip(ser['stage'], ser['iteration']):
                got.setdefault(st, []).append((name, it))
            api_points += ser['points']
        for idx in range(N_STAGES):
            assert sorted(got.get(idx, [])) == oracle[idx], (
                'job %s stage %d: metric keys differ from what the worker sends' % (job_id, idx),
                sorted(set(got.get(idx, [])) ^ set(oracle[idx]))[:10])
        # another user cannot see it
        other = users[(u + 1) % len(users)]
        assert g.get('/api/v1/jobs/' + job_id, token=other).status == 404
    assert api_points == prof['jobs'] * sum(len(v) for v in oracle.values()), api_points
    health = g.get('/api/v1/health', token=None).json()
    assert health['queued'] == 0, health

    # 7. stop the workers (the survivors drain and exit 0), the monitors, gppd
    rcs = {w.i: w.stop() for w in workers}
    bad = {i: rc for i, rc in rcs.items() if rc != 0}
    assert not bad, ('workers exited badly', bad, [workers[i].log()[-2000:] for i in bad])
    mon.stop()
    # no descriptor left behind by 1000 stages, killed workers and SSE streams
    deadline = time.time() + 20
    while time.time() < deadline and fd_count(g.proc.pid) > fds_before + 2:
        time.sleep(0.2)
    fds_after = fd_count(g.proc.pid)
    assert fds_after <= fds_before + 2, ('file descriptors', fds_before, fds_after,
                                         os.listdir('/proc/%d/fd' % g.proc.pid))
    g.stop()       # SIGTERM -> exit 0, no sanitizer report, "stopped"
    t_end = time.time()
    # no upload left half-written (a worker killed mid-upload)
    left = os.listdir(os.path.join(g.data_dir, 'artifacts', 'tmp'))
    assert not left, ('temporary upload files left', left[:5])

    # 8. the database, read after gppd stopped
    db = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    seq_of = dict(db.execute('SELECT id, seq FROM jobs'))
    assert len(seq_of) == prof['jobs'], len(seq_of)
    states = db.execute('SELECT state, COUNT(*) FROM jobs GROUP BY state').fetchall()
    assert states == [('succeeded', prof['jobs'])], states
    bad = db.execute("SELECT COUNT(*) FROM jobs WHERE stages_done != stages_total "
                     "OR stages_total != ?", (N_STAGES,)).fetchone()[0]
    assert bad == 0, bad
    st = db.execute('SELECT state, COUNT(*) FROM stages GROUP BY state').fetchall()
    assert st == [('succeeded', N_STAGES * prof['jobs'])], st
    dups = db.execute('SELECT job_seq, name_id, stage_idx, iteration, attempt, COUNT(*) '
                      'FROM metrics GROUP BY 1, 2, 3, 4, 5 HAVING COUNT(*) > 1').fetchall()
    assert not dups, dups[:5]
    db_points = db.execute('SELECT COUNT(*) FROM metrics').fetchone()[0]
    rows = db.execute('SELECT m.job_seq, m.stage_idx, n.name, m.iteration, m.attempt, s.attempt '
                      'FROM metrics m JOIN metric_names n ON n.id = m.name_id '
                      'JOIN stages s ON s.job_seq = m.job_seq AND s.idx = m.stage_idx').fetchall()
    keys = {}
    for seq, idx, name, it, att, final_att in rows:
        assert 1 <= att <= final_att, ('a point of an attempt that never was', seq, idx, att)
        keys.setdefault((seq, idx), set()).add((name, it))
    for job_id, seq in seq_of.items():
        for idx in range(N_STAGES):
            assert sorted(keys.get((seq, idx), ())) == oracle[idx], (job_id, idx)
    # every SSE client got every event of its job, in order, once, ending with the job's end
    sse_events = 0
    for job_id, c in followed.items():
        want = [i for (i,) in db.execute('SELECT id FROM events WHERE job_seq = ? ORDER BY id',
                                         (seq_of[job_id],))]
        ids = [e[0] for e in c.events]
        assert ids == want, ('job %s: SSE ids differ from the events table' % job_id,
                             sorted(set(ids) ^ set(want))[:10], len(ids), len(want))
        fin = c.final_event()
        assert fin and fin[2]['state'] == 'succeeded' and c.events[-1] == fin, (job_id, fin)
        assert all(e[2].get('job') == job_id for e in c.events), job_id
        sse_events += len(ids)
    reconnected = sum(1 for c in followed.values() if c.connects > 1)
    assert reconnected >= n_sse // prof['reconnect_every'], reconnected
    db.close()

    # 9. the API answered throughout; memory stayed bounded
    bad = [(round(t - t_start, 1), s) for t, _, s in mon.lat if s != 200]
    assert not bad, ('GET /api/v1/jobs failed', bad[:5])
    max_lat = max(dt for _, dt, _ in mon.lat)
    assert max_lat < API_LATENCY_MAX, ('GET /api/v1/jobs too slow', max_lat)
    assert len(mon.lat) >= (t_done - t_workers) / 1.0, len(mon.lat)
    rss = [kb for _, kb, _ in mon.rss]
    assert len(rss) >= 20, len(rss)
    q = len(rss) // 4
    first_max, last_max = max(rss[:q]), max(rss[-q:])
    if prof['rss_check']:        # not under ASan: its quarantine makes RSS meaningless
        assert last_max <= RSS_FACTOR * first_max + RSS_SLACK_KB, ('RSS grew', first_max, last_max)

    lat = sorted(dt for _, dt, _ in mon.lat)
    figures = {
        'profile': prof['name'], 'wall_s': round(t_end - t_start, 1),
        'run_s': round(t_done - t_workers, 1), 'jobs': prof['jobs'], 'users': prof['users'],
        'workers': prof['workers'], 'kills': kill_log, 'stages': N_STAGES * prof['jobs'],
        'stages_retried': attempts_over_1, 'metric_points_api': api_points,
        'metric_points_db': db_points, 'sse_clients': len(followed),
        'sse_streams_open_max': streams_open, 'sse_events': sse_events,
        'sse_reconnected': reconnected, 'sse_abandoned': len(abandoning),
        'fds': {'before': fds_before, 'max': max(f for f in mon.fds if f is not None),
                'after': fds_after},
        'api_polls': len(lat), 'api_latency_p50_s': round(lat[len(lat) // 2], 4),
        'api_latency_max_s': round(max_lat, 4),
        'rss_kb': {'start': rss[0], 'first_quarter_max': first_max, 'last_quarter_max': last_max,
                   'max': max(rss), 'end': rss[-1], 'samples': len(rss)},
        'db_kb_end': mon.rss[-1][2],
        't_streams_s': round(t_streams - t_start, 1),
    }
    print('soak figures: ' + json.dumps(figures), flush=True)
    if os.environ.get('GPP_SOAK_TRACE'):       # the samples, for a closer look
        with open(os.environ['GPP_SOAK_TRACE'], 'w') as f:
            json.dump({'t0': t_start, 'rss': mon.rss, 'lat': mon.lat, 'kills': kill_log}, f)


def main(argv):
    global WORKER
    if len(argv) < 4 or argv[3] not in PROFILES:
        sys.stderr.write(__doc__)
        return 2
    H.GPPD = os.path.abspath(argv[1])
    WORKER = os.path.abspath(argv[2])
    prof = dict(PROFILES[argv[3]], name=argv[3])
    if os.environ.get('GPP_SOAK_JOBS'):        # a longer (or shorter) run by hand
        prof['jobs'] = int(os.environ['GPP_SOAK_JOBS'])
        prof['deadline'] = max(prof['deadline'], prof['jobs'] * 2)
    # the leak check: LeakSanitizer on in gppd (a no-op in a plain build)
    asan = os.environ.get('ASAN_OPTIONS', '')
    os.environ['ASAN_OPTIONS'] = (asan + ':' if asan else '') + 'detect_leaks=1'
    tmp = tempfile.mkdtemp(prefix='gppd-soak-')
    g = None
    t0 = time.time()
    ok = False
    try:
        g = L.Daemon(tmp, grace=prof['grace'])
        g.start()
        soak(g, prof)
        ok = True
    except Exception:
        traceback.print_exc()
        if g:
            print('---- gppd log (tail) ----\n' + g.log()[-8000:])
    finally:
        if g and g.proc:
            g.proc.kill()
            g.proc.wait()
        for p in PROCS:            # workers left by a failure half-way
            if p.poll() is None:
                p.kill()
                p.wait()
        if ok or not os.environ.get('GPP_SOAK_KEEP'):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print('kept ' + tmp)
    print('%s soak %s (%.1f s)' % ('ok  ' if ok else 'FAIL', prof['name'], time.time() - t0),
          flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
