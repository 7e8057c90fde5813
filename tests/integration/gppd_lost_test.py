#!/usr/bin/env python3
"""A worker lost mid-stage (kill -9) loses no metric point: real gppd and
real gpp-worker processes (daemon mode) on loopback.

usage: gppd_lost_test.py PATH/TO/gppd PATH/TO/worker GROUP

Issue 6, "Worker lost mid-stage": after the grace window the stage goes to
another worker and restarts from its last mid-stage checkpoint; the job
succeeds and every iteration of the stage has exactly one metric point per
name -- no gap, no duplicate.  The kill comes right after the worker wrote
a fresh per-epoch checkpoint, while the points of the last fraction of a
second are not yet acknowledged by gppd: the checkpoint the next worker
resumes from must not lie beyond the acknowledged points.

Groups:
  resume      worker A killed right after a new epoch checkpoint appeared in
              its cache; worker B (a new process, the same --cache-dir)
              takes the stage as attempt 2 and resumes mid-stage
  other_cache the same kill; worker B has a cache of its own, so attempt 2
              starts from the stage's input and re-runs every iteration
Standard library only; run with /usr/bin/python3.
"""
import glob
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppd_link_test as L  # noqa: E402  (Daemon, register_tiny, tiny_job, wait_running)

WORKER = None
EPOCHS = 12
TRAIN_NAMES = ('loss', 'ce', 'batch_accuracy', 'lr', 'images_per_s')
EVAL_NAMES = ('val_accuracy', 'test_accuracy', 'params', 'macs', 'flops')


def start_worker(g, name, cache):
    log = open(os.path.join(g.tmp, 'worker-%s.log' % name), 'w')
    p = subprocess.Popen([WORKER, '--connect', '127.0.0.1:%d' % g.link_port, '--token-file',
                          os.path.join(g.data_dir, 'worker.token'), '--threads', '1',
                          '--cache-dir', cache, '--name', name], stderr=log)
    log.close()
    return p


def worker_log(g, name):
    with open(os.path.join(g.tmp, 'worker-%s.log' % name)) as f:
        text = f.read()
    assert 'Sanitizer' not in text and 'runtime error' not in text, text[-3000:]
    return text


def file_id(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def kill_after_fresh_checkpoint(g, job_id, proc, cache):
    """Wait until the stage is well under way (progress >= 0.35: several
    epochs done and delivered), then until the worker writes its next
    per-epoch checkpoint, and kill -9 the worker at once."""
    L.wait_running(g, job_id, progress=0.35, timeout=120)
    pattern = os.path.join(cache, 'work', '*.partial.gppm')
    deadline = time.time() + 60
    seen = None
    while time.time() < deadline:
        files = glob.glob(pattern)
        assert len(files) <= 1, files
        if files:
            seen = file_id(files[0])
            break
        time.sleep(0.001)
    assert seen, 'no mid-stage checkpoint in %s' % cache
    while time.time() < deadline:
        cur = file_id(files[0])
        if cur is not None and cur != seen:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.0005)
    raise AssertionError('no new mid-stage checkpoint within 60 s')


def series(g, job_id, name):
    r = g.get('/api/v1/jobs/%s/metrics?name=%s&max_points=0' % (job_id, name))
    assert r.status == 200, r
    s = r.json()['series'][name]
    return s['iteration'], s['attempt']


def check_metrics(g, job_id, resumed_step):
    """Every iteration 1..N of stage 0 exactly once per name; iterations up
    to the resumed step come from attempt 1, the rest from attempt 2."""
    its, att = series(g, job_id, 'loss')
    n = its[-1]
    assert n % EPOCHS == 0 and n >= EPOCHS, ('not a whole number of epochs', n)
    for name in TRAIN_NAMES:
        its, att = series(g, job_id, name)
        assert its == list(range(1, n + 1)), (name, 'gaps or doubles',
                                              sorted(set(range(1, n + 1)) - set(its)), its)
        want = [1 if i <= resumed_step else 2 for i in its]
        assert att == want, (name, resumed_step, list(zip(its, att)))
    for name in EVAL_NAMES:
        its, att = series(g, job_id, name)
        assert its == [n] and att == [2], (name, its, att)
    return n


def check_rows(g, n, resumed_step):
    """The raw rows (gppd stopped): per name and attempt each iteration at
    most once; attempt 2 holds exactly (resumed_step, n]; attempt 1 holds
    at least 1..resumed_step, with no hole below its highest iteration."""
    db = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    try:
        rows = db.execute('SELECT n.name, m.attempt, m.iteration, COUNT(*) FROM metrics m'
                          ' JOIN metric_names n ON n.id = m.name_id WHERE m.stage_idx = 0'
                          ' GROUP BY n.name, m.attempt, m.iteration').fetchall()
    finally:
        db.close()
    per = {}
    for name, attempt, it, count in rows:
        assert count == 1, ('stored twice', name, attempt, it, count)
        per.setdefault((name, attempt), []).append(it)
    for name in TRAIN_NAMES:
        a1 = sorted(per.get((name, 1), []))
        a2 = sorted(per.get((name, 2), []))
        assert a2 == list(range(resumed_step + 1, n + 1)), (name, resumed_step, a2[:5])
        assert a1 and a1 == list(range(1, a1[-1] + 1)) and a1[-1] >= resumed_step, \
            (name, resumed_step, a1[-5:])
    print('stage 0: %d iterations; attempt 1 delivered 1..%d; attempt 2 ran %d..%d'
          % (n, max(per[('loss', 1)]), resumed_step + 1, n), flush=True)


def run_lost(g, same_cache):
    L.register_tiny(g)
    cache_a = os.path.join(g.tmp, 'wc-a')
    a = start_worker(g, 'a', cache_a)
    b = None
    try:
        wid_a = g.wait_workers(1)[0]['id']
        job_id = g.submit(L.tiny_job(train={'epochs': EPOCHS}, iterations=0))
        kill_after_fresh_checkpoint(g, job_id, a, cache_a)
        b = start_worker(g, 'b', cache_a if same_cache else os.path.join(g.tmp, 'wc-b'))
        job = g.wait_job(job_id, timeout=240)
        assert job['state'] == 'succeeded', (job, g.log()[-4000:])
        st = job['stages'][0]
        assert st['attempt'] == 2 and st['worker'] and st['worker'] != wid_a, st
        assert 'stage lost with its worker' in g.log(), g.log()[-3000:]
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=30) == 0
        wlog = worker_log(g, 'b')
        worker_log(g, 'a')
        m = re.search(r'resumed train at epoch (\d+) \(step (\d+)\)', wlog)
        if same_cache:
            # the resume must really happen (else this tests nothing)
            assert m and int(m.group(1)) >= 1, ('attempt 2 did not resume', wlog[-3000:])
            step = int(m.group(2))
        else:
            assert not m, ('resumed from a checkpoint it cannot have', m.group(0))
            step = 0
        n = check_metrics(g, job_id, step)
        assert step < n
    finally:
        for p in (a, b):
            if p and p.poll() is None:
                p.kill()
                p.wait()
    g.stop()
    check_rows(g, n, step)
    # the cache keeps no mid-stage checkpoint of a delivered stage
    if same_cache:
        left = [f for f in os.listdir(os.path.join(cache_a, 'work'))
                if f.endswith(('.partial.gppm', '.cand.gppm', '.resume.gppm')) or '.tmp.' in f]
        assert not left, left


def test_resume(g):
    run_lost(g, True)


def test_other_cache(g):
    run_lost(g, False)


GROUPS = {'resume': test_resume, 'other_cache': test_other_cache}


def main(argv):
    global WORKER
    if len(argv) < 4 or argv[3] not in GROUPS:
        sys.stderr.write(__doc__ + '\ngroups: %s\n' % ' '.join(GROUPS))
        return 2
    L.H.GPPD = os.path.abspath(argv[1])
    WORKER = os.path.abspath(argv[2])
    fn = GROUPS[argv[3]]
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix='gppd-lost-')
    g = None
    ok = False
    try:
        g = L.Daemon(tmp, grace=2)
        g.start()
        fn(g)
        ok = True
    except Exception:
        traceback.print_exc()
        if g:
            print('---- gppd log (tail) ----\n' + g.log()[-6000:])
        for name in ('a', 'b'):
            p = os.path.join(tmp, 'worker-%s.log' % name)
            if os.path.exists(p):
                with open(p) as f:
                    print('---- worker %s log (tail) ----\n%s' % (name, f.read()[-3000:]))
    finally:
        if g and g.proc and g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print('%s %s (%.1f s)' % ('ok  ' if ok else 'FAIL', fn.__name__, time.time() - t0),
          flush=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
