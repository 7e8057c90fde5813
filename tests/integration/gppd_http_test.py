#!/usr/bin/env python3
"""Integration tests of gppd over real HTTP on loopback.

usage: gppd_http_test.py PATH/TO/gppd GROUP [TEST...]

Every test starts its own gppd (the real binary) on 127.0.0.1 port 0 with a
temporary data folder, talks HTTP to it, and stops it with SIGTERM, checking
that it exits 0 (which, in the sanitizer build, also means no leak report).
Standard library only; run with /usr/bin/python3.
"""
import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback

GPPD = None
TOKEN_RE = re.compile(r'^gpp_(adm|usr|wrk)_[A-Za-z0-9_-]{43}$')
START_TIMEOUT = 60


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body.decode('utf-8'))

    def __repr__(self):
        return 'HTTP %d %r' % (self.status, self.body[:300])


class Gppd:
    """One gppd process on a data folder inside `tmp`."""

    def __init__(self, tmp, data_dir=None, web_root=None, args=()):
        self.tmp = tmp
        self.data_dir = data_dir or os.path.join(tmp, 'data')
        self.web_root = web_root
        self.args = list(args)
        self.log_path = os.path.join(tmp, 'gppd.log')
        self.proc = None
        self.port = None

    def cmdline(self):
        cmd = [GPPD, '--listen', '127.0.0.1:0', '--worker-listen', '127.0.0.1:0',
               '--data-dir', self.data_dir]
        cmd += ['--web-root', self.web_root or os.path.join(self.tmp, 'no-web')]
        return cmd + self.args

    def log(self):
        try:
            with open(self.log_path, 'r', errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def start(self):
        offset = len(self.log())
        logf = open(self.log_path, 'a')
        self.proc = subprocess.Popen(self.cmdline(), stdout=logf, stderr=logf)
        logf.close()
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            m = re.search(r'listening"? http=127\.0\.0\.1:(\d+)', self.log()[offset:])
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError('gppd exited with %d at start:\n%s'
                                     % (self.proc.returncode, self.log()[offset:]))
            time.sleep(0.02)
        raise AssertionError('gppd did not log its port:\n' + self.log())

    def stop(self, expect_rc=0):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('gppd did not stop on SIGTERM:\n' + self.log()[-3000:])
        self.proc = None
        log = self.log()
        assert 'runtime error' not in log and 'Sanitizer' not in log, log[-6000:]
        assert rc == expect_rc, 'gppd exited %d:\n%s' % (rc, log[-6000:])
        assert 'msg="stopped"' in log, log[-2000:]

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def token(self, role='admin'):
        with open(os.path.join(self.data_dir, role + '.token')) as f:
            return f.read().strip()

    def request(self, method, path, body=None, token='admin', headers=None,
                ctype='application/json'):
        hdrs = dict(headers or {})
        if token == 'admin':
            token = self.token('admin')
        if token:
            hdrs['Authorization'] = 'Bearer ' + token
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode('utf-8')
            if ctype:
                hdrs['Content-Type'] = ctype
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            return Resp(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def post(self, path, body, **kw):
        return self.request('POST', path, body=body, **kw)

    def raw(self, data, timeout=20):
        """Send raw bytes (a list is sent piece by piece); return what comes back."""
        s = socket.create_connection(('127.0.0.1', self.port), timeout=timeout)
        try:
            for piece in (data if isinstance(data, list) else [data]):
                try:
                    s.sendall(piece)
                except OSError:
                    break
            out = b''
            while True:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()


def assert_error(r, status, code=None, field=None):
    assert r.status == status, 'want %d, got %r' % (status, r)
    assert (r.header('Content-Type') or '').startswith('application/json'), r.headers
    doc = r.json()
    assert set(doc.keys()) == {'error'}, doc
    err = doc['error']
    assert set(err.keys()) == {'code', 'message', 'field'}, err
    assert isinstance(err['code'], str) and err['code'], err
    assert isinstance(err['message'], str) and err['message'], err
    if code is not None:
        assert err['code'] == code, err
    if field is not None:
        assert err['field'] == field, err
    return err


def make_idx(folder, n=20, classes=10, gz=True):
    """A tiny IDX data set (28x28 images) in the standard four files."""
    os.makedirs(folder, exist_ok=True)
    for split, count in (('train', n), ('t10k', n // 2)):
        images = struct.pack('>IIII', 0x803, count, 28, 28) + bytes(count * 28 * 28)
        labels = struct.pack('>II', 0x801, count) + bytes(i % classes for i in range(count))
        for name, data in (('%s-images-idx3-ubyte' % split, images),
                           ('%s-labels-idx1-ubyte' % split, labels)):
            if gz:
                with gzip.open(os.path.join(folder, name + '.gz'), 'wb') as f:
                    f.write(data)
            else:
                with open(os.path.join(folder, name), 'wb') as f:
                    f.write(data)
    return folder


def register_tiny(g, name='tiny'):
    folder = make_idx(os.path.join(g.tmp, 'ds-' + name))
    r = g.post('/api/v1/datasets', {'name': name, 'format': 'idx', 'path': folder})
    assert r.status == 201, r
    return r.json()


def issue_token(g, name, role='user'):
    r = g.post('/api/v1/tokens', {'name': name, 'role': role})
    assert r.status == 201, r
    doc = r.json()
    assert TOKEN_RE.match(doc['token']), doc
    return doc


def submit(g, spec=None, token='admin', headers=None):
    spec = spec if spec is not None else {'dataset': 'tiny', 'model': 'lenet5'}
    return g.post('/api/v1/jobs', spec, token=token, headers=headers)


# ---- basics -------------------------------------------------------------------

def test_health(g):
    r = g.get('/api/v1/health', token=None)
    assert r.status == 200, r
    doc = r.json()
    assert doc['status'] == 'ok' and doc['workers'] == 0 and doc['queued'] == 0, doc
    assert re.match(r'^\d+\.\d+\.\d+', doc['version']), doc
    r = g.request('HEAD', '/api/v1/health', token=None)
    assert r.status == 200 and r.body == b'', r


def test_openapi_public(g):
    r = g.get('/api/v1/openapi.json', token=None)
    assert r.status == 200, r
    doc = r.json()
    assert doc['openapi'].startswith('3.0.'), doc['openapi']
    for p in ('/api/v1/health', '/api/v1/jobs', '/api/v1/jobs/{id}', '/api/v1/jobs/{id}/metrics',
              '/api/v1/tokens', '/api/v1/datasets', '/metrics'):
        assert p in doc['paths'], p
    assert 'post' in doc['paths']['/api/v1/jobs']


def test_not_found_and_method(g):
    assert_error(g.get('/api/v1/nosuch'), 404, 'not_found')
    assert_error(g.get('/api/v1/jobs/jdoesnotexist'), 404, 'not_found')
    r = g.request('DELETE', '/api/v1/jobs')
    assert_error(r, 405, 'method_not_allowed')
    assert r.header('Allow') == 'GET, POST', r.headers
    r = g.request('PUT', '/index.html', token=None)
    assert_error(r, 405)
    assert_error(g.get('/'), 404)     # no web root: nothing served


def test_prometheus(g):
    g.get('/api/v1/health', token=None)
    assert_error(g.get('/api/v1/jobs', token=None), 401)
    r = g.get('/metrics', token=None)
    assert r.status == 200, r
    assert r.header('Content-Type').startswith('text/plain'), r.headers
    text = r.body.decode()
    for want in ('gppd_jobs{state="queued"} 0', 'gppd_workers 0',
                 'gppd_http_requests_total{code="200"}', 'gppd_http_requests_total{code="401"} 1',
                 'gppd_http_request_duration_seconds_bucket{le="+Inf"}',
                 'gppd_http_request_duration_seconds_count'):
        assert want in text, (want, text)


# ---- auth ---------------------------------------------------------------------

def test_token_files_and_no_plaintext(g):
    assert stat.S_IMODE(os.stat(g.data_dir).st_mode) == 0o700
    for role in ('admin', 'worker'):
        path = os.path.join(g.data_dir, role + '.token')
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, role
        assert TOKEN_RE.match(g.token(role)), g.token(role)
    assert g.token('admin').startswith('gpp_adm_') and g.token('worker').startswith('gpp_wrk_')
    assert 'admin.token' in g.log() and 'worker.token' in g.log()
    user = issue_token(g, 'alice')['token']
    assert g.get('/api/v1/jobs', token=user).status == 200
    secrets = [g.token('admin'), g.token('worker'), user]
    g.stop()          # the WAL is checkpointed into gppd.db: both are looked at below
    g.start()
    for name in os.listdir(g.data_dir):
        path = os.path.join(g.data_dir, name)
        if name.endswith('.token') or not os.path.isfile(path):
            continue
        with open(path, 'rb') as f:
            data = f.read()
        for s in secrets:
            assert s.encode() not in data, 'plaintext token in ' + name
            assert s[8:].encode() not in data, 'token secret in ' + name
    # but its hash is there
    db = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    n = db.execute('SELECT count(*) FROM tokens WHERE length(hash) = 32').fetchone()[0]
    db.close()
    assert n == 3, n


def test_401_cases(g):
    fake = 'gpp_usr_' + 'A' * 43
    for hdr in (None, 'Basic YWRtaW46YWRtaW4=', 'Bearer', 'Bearer ', 'Bearer not-a-token',
                'Bearer ' + g.token('admin') + 'x', 'Bearer ' + fake, 'bearer' + fake):
        headers = {'Authorization': hdr} if hdr is not None else {}
        r = g.get('/api/v1/jobs', token=None, headers=headers)
        assert_error(r, 401, 'unauthenticated')
        assert r.header('WWW-Authenticate') == 'Bearer', r.headers
    # revoked
    doc = issue_token(g, 'bob')
    assert g.get('/api/v1/jobs', token=doc['token']).status == 200
    r = g.request('DELETE', '/api/v1/tokens/' + doc['id'])
    assert r.status == 200 and r.json()['active'] is False and r.json()['revoked_at'], r
    err = assert_error(g.get('/api/v1/jobs', token=doc['token']), 401, 'unauthenticated')
    assert 'revoked' in err['message'], err
    # 401 comes before the body is looked at
    assert_error(g.post('/api/v1/jobs', {'dataset': 'x', 'model': 'lenet5'}, token=None), 401)


def test_roles(g):
    user = issue_token(g, 'carol')['token']
    # token administration is for admins: a user gets 403
    assert_error(g.get('/api/v1/tokens', token=user), 403, 'forbidden')
    assert_error(g.post('/api/v1/tokens', {'name': 'eve'}, token=user), 403, 'forbidden')
    assert_error(g.request('DELETE', '/api/v1/tokens/tabc', token=user), 403, 'forbidden')
    # worker tokens are for the worker link
    assert_error(g.get('/api/v1/jobs', token=g.token('worker')), 403, 'forbidden')
    # listing shows no secrets
    r = g.get('/api/v1/tokens')
    assert r.status == 200, r
    toks = r.json()['tokens']
    assert {t['name'] for t in toks} == {'admin', 'worker', 'carol'}, toks
    for t in toks:
        assert 'token' not in t and 'hash' not in t, t
        assert len(t['prefix']) == 12 and t['id'].startswith('t'), t
    assert user not in r.body.decode()
    # bad requests
    assert_error(g.post('/api/v1/tokens', {'name': 'x', 'admin': True}), 422, 'invalid_argument', 'admin')
    assert_error(g.post('/api/v1/tokens', {'name': 'no spaces'}), 422, 'invalid_argument', 'name')
    assert_error(g.post('/api/v1/tokens', {'name': 'x', 'role': 'root'}), 422, field='role')
    assert_error(g.post('/api/v1/tokens', {'role': 'user'}), 422, field='name')
    assert_error(g.post('/api/v1/tokens', {'name': 'admin', 'role': 'user'}), 409, 'conflict')
    assert_error(g.request('DELETE', '/api/v1/tokens/tnosuchtoken'), 404, 'not_found')
    # the last admin token cannot be revoked; with a second one it can
    admin_id = [t['id'] for t in toks if t['name'] == 'admin'][0]
    assert_error(g.request('DELETE', '/api/v1/tokens/' + admin_id), 409, 'conflict')
    second = issue_token(g, 'root2', 'admin')['token']
    assert g.request('DELETE', '/api/v1/tokens/' + admin_id, token=second).status == 200
    assert_error(g.get('/api/v1/jobs'), 401)
    assert g.get('/api/v1/tokens', token=second).status == 200


# ---- submit -------------------------------------------------------------------

def test_submit_minimal(g):
    register_tiny(g)
    r = submit(g)
    assert r.status == 201, r
    job = r.json()
    assert r.header('Location') == '/api/v1/jobs/' + job['id'], r.headers
    assert re.match(r'^j[a-z2-7]{12}$', job['id']), job['id']
    assert job['state'] == 'queued' and job['owner'] == 'admin', job
    spec = job['spec']
    # defaults filled in
    assert spec['train']['epochs'] == 2 and spec['train']['batch_size'] == 64, spec
    assert spec['iterations'] == 10 and spec['prune']['ratio'] == 0.3, spec
    assert spec['stop']['max_accuracy_drop'] == 0.005, spec
    assert spec['device'] == 'any' and spec['priority'] == 0 and spec['seed'] == 1, spec
    assert spec['name'] == 'lenet5-tiny', spec
    # the chain: train, then 10 x (push, prune), then the final recovery
    kinds = [s['kind'] for s in job['stages']]
    assert kinds == ['train'] + ['push', 'prune'] * 10 + ['finetune'], kinds
    assert [s['index'] for s in job['stages']] == list(range(22))
    assert all(s['state'] == 'queued' and s['attempt'] == 0 for s in job['stages'])
    assert job['stages'][0]['reason'] == 'waiting_for_worker', job['stages'][0]
    assert job['progress'] == 0 and job['current_stage'] == 0, job
    r2 = g.get(r.header('Location'))
    assert r2.status == 200 and r2.json()['spec'] == spec, r2
    # grow steps and a gpu device
    r = submit(g, {'dataset': 'tiny', 'model': 'lenet5', 'iterations': 1, 'device': 'gpu',
                   'grow': {'enabled': True, 'max_modules': 2}})
    assert r.status == 201, r
    job = r.json()
    assert [s['kind'] for s in job['stages']] == ['train', 'grow', 'grow', 'push', 'prune',
                                                  'finetune']
    assert job['stages'][0]['reason'] == 'waiting_for_gpu'
    h = g.get('/api/v1/health', token=None).json()
    assert h['queued'] == 2, h
    r = g.get('/api/v1/jobs/%s/logs' % job['id'])
    assert r.status == 200 and 'submitted by admin' in r.json()['logs'][0]['message'], r
    r = g.get('/api/v1/jobs/%s/architecture' % job['id'])
    assert r.status == 200 and r.json()['stages'] == [] and r.json()['baseline'] is None, r
    r = g.get('/api/v1/jobs/%s/metrics' % job['id'])
    assert r.status == 200 and r.json()['names'] == [] and r.json()['series'] == {}, r
    assert g.get('/api/v1/workers').json() == {'workers': [], 'next_cursor': None}


def test_submit_errors(g):
    register_tiny(g)
    err = assert_error(submit(g, {'dataset': 'tiny', 'model': 'lenet5', 'bogus': 1}), 422)
    assert err['field'] == 'bogus', err
    err = assert_error(submit(g, {'dataset': 'tiny', 'model': 'lenet5', 'prune': {'ratio': 2}}),
                       422, 'invalid_argument', 'prune.ratio')
    assert_error(submit(g, {'model': 'lenet5'}), 422, field='dataset')
    assert_error(submit(g, {'dataset': 'unregistered', 'model': 'lenet5'}), 422, field='dataset')
    assert_error(submit(g, {'dataset': 'tiny', 'model': {'checkpoint': 'jnosuchjob'}}), 422,
                 field='model.checkpoint')
    assert_error(submit(g, '{"dataset": "tiny", "model": '), 400, 'malformed')
    assert_error(submit(g, '{"dataset": "tiny"} trailing'), 400, 'malformed')
    assert_error(submit(g, ''), 400, 'malformed')
    assert_error(submit(g, '[1, 2]'), 422)
    # wrong or missing content type
    assert_error(g.post('/api/v1/jobs', '{}', ctype='text/plain'), 415, 'unsupported_media_type')
    assert_error(g.post('/api/v1/jobs', '{}', ctype=None), 415)
    assert g.post('/api/v1/jobs', {'dataset': 'tiny', 'model': 'lenet5'},
                  ctype='application/json; charset=utf-8').status == 201
    # nesting bomb
    bomb = '{"dataset": "tiny", "model": ' + '[' * 100000 + ']' * 100000 + '}'
    assert_error(submit(g, bomb), 400, 'malformed')
    # too large: declared (the reply comes before any body is sent) ...
    tok = g.token('admin')
    head = ('POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
            'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n' % (tok, 2 * 1024 * 1024))
    out = g.raw(head.encode())
    assert out.startswith(b'HTTP/1.1 413'), out[:200]
    assert b'"too_large"' in out, out
    # ... and received (chunked, no length declared)
    chunked = ('POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
               'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n'
               'Connection: close\r\n\r\n' % tok)
    piece = b' ' * 65536
    parts = [chunked.encode()] + [b'10000\r\n' + piece + b'\r\n'] * 17 + [b'0\r\n\r\n']
    out = g.raw(parts)
    assert out.startswith(b'HTTP/1.1 413'), out[:200]
    assert b'"too_large"' in out, out
    # just under the limit is fine (a valid spec padded with spaces)
    body = json.dumps({'dataset': 'tiny', 'model': 'lenet5'})
    body = body + ' ' * (1024 * 1024 - len(body))
    assert submit(g, body).status == 201
    # after all that the daemon still serves
    assert g.get('/api/v1/health', token=None).status == 200


def test_idempotency(g):
    register_tiny(g)
    spec = {'dataset': 'tiny', 'model': 'lenet5', 'iterations': 1}
    r1 = submit(g, spec, headers={'Idempotency-Key': 'abc-123'})
    assert r1.status == 201, r1
    # the same spec written differently is the same spec
    r2 = g.post('/api/v1/jobs', '{ "model": "lenet5", "iterations": 1, "dataset": "tiny" }',
                headers={'Idempotency-Key': 'abc-123'})
    assert r2.status == 200, r2
    assert r2.json()['id'] == r1.json()['id']
    assert r2.header('Location') == r1.header('Location')
    err = assert_error(submit(g, dict(spec, iterations=2), headers={'Idempotency-Key': 'abc-123'}),
                       409, 'conflict')
    assert err['field'] == 'Idempotency-Key', err
    jobs = g.get('/api/v1/jobs').json()['jobs']
    assert len(jobs) == 1, jobs
    # the key is per token
    user = issue_token(g, 'dave')['token']
    r3 = submit(g, spec, token=user, headers={'Idempotency-Key': 'abc-123'})
    assert r3.status == 201 and r3.json()['id'] != r1.json()['id'], r3
    assert_error(submit(g, spec, headers={'Idempotency-Key': 'x' * 256}), 400,
                 field='Idempotency-Key')
    # survives a restart
    g.stop()
    g.start()
    r4 = submit(g, spec, headers={'Idempotency-Key': 'abc-123'})
    assert r4.status == 200 and r4.json()['id'] == r1.json()['id'], r4


# ---- lists --------------------------------------------------------------------

def test_pagination(g):
    register_tiny(g)
    ids = []
    for i in range(120):
        r = submit(g, {'dataset': 'tiny', 'model': 'lenet5', 'name': 'job-%03d' % i,
                       'iterations': 0})
        assert r.status == 201, r
        ids.append(r.json()['id'])
    seen, cursor, pages = [], None, []
    while True:
        path = '/api/v1/jobs?limit=50' + ('&cursor=' + cursor if cursor else '')
        r = g.get(path)
        assert r.status == 200, r
        doc = r.json()
        pages.append(len(doc['jobs']))
        seen += [j['id'] for j in doc['jobs']]
        assert 'spec' not in doc['jobs'][0] and 'stages' not in doc['jobs'][0]
        cursor = doc['next_cursor']
        if cursor is None:
            break
        assert re.match(r'^[A-Za-z0-9_-]+$', cursor), cursor
    assert pages == [50, 50, 20], pages
    assert seen == list(reversed(ids)), 'not newest first, or gaps/duplicates'
    assert len(set(seen)) == 120
    assert len(g.get('/api/v1/jobs').json()['jobs']) == 50        # default limit
    assert len(g.get('/api/v1/jobs?limit=500').json()['jobs']) == 120
    for bad in ('limit=0', 'limit=501', 'limit=abc', 'cursor=garbage', 'cursor=dDox',
                'state=nope'):
        assert_error(g.get('/api/v1/jobs?' + bad), 400, 'malformed')


def test_filters(g):
    register_tiny(g)
    register_tiny(g, 'tiny2')
    alice = issue_token(g, 'alice')['token']
    bob = issue_token(g, 'bob')['token']
    made = {}
    for who, tok in (('alice', alice), ('bob', bob)):
        for model in ('lenet5', 'lenet300-100'):
            for ds in ('tiny', 'tiny2'):
                r = submit(g, {'dataset': ds, 'model': model, 'iterations': 0}, token=tok)
                assert r.status == 201, r
                made.setdefault(who, []).append((r.json()['id'], model, ds))
    cancel_id = made['alice'][0][0]
    assert g.post('/api/v1/jobs/%s/cancel' % cancel_id, None, token=alice).status == 202

    def ids(q, token='admin'):
        r = g.get('/api/v1/jobs?limit=500' + q, token=token)
        assert r.status == 200, r
        return [j['id'] for j in r.json()['jobs']]
    assert len(ids('')) == 8
    assert set(ids('&owner=alice')) == {m[0] for m in made['alice']}
    assert set(ids('&model=lenet300-100')) == {m[0] for w in made for m in made[w]
                                                if m[1] == 'lenet300-100'}
    assert len(ids('&dataset=tiny2&model=lenet5')) == 2
    assert ids('&state=cancelled') == [cancel_id]
    assert len(ids('&state=queued')) == 7
    assert len(ids('&state=queued&owner=bob&dataset=tiny')) == 2
    # a user sees only their own jobs, whatever the filter says
    assert set(ids('', token=bob)) == {m[0] for m in made['bob']}
    assert ids('&owner=alice', token=bob) == []
    assert ids('&state=cancelled', token=bob) == []


def test_isolation_cancel_retry(g):
    register_tiny(g)
    alice = issue_token(g, 'alice')['token']
    bob = issue_token(g, 'bob')['token']
    ja = submit(g, token=alice).json()['id']
    jb = submit(g, token=bob).json()['id']
    # bob cannot see or touch alice's job: 404, so ids do not leak
    for path in ('/api/v1/jobs/%s', '/api/v1/jobs/%s/metrics', '/api/v1/jobs/%s/logs',
                 '/api/v1/jobs/%s/architecture'):
        assert_error(g.get(path % ja, token=bob), 404, 'not_found')
    assert_error(g.post('/api/v1/jobs/%s/cancel' % ja, None, token=bob), 404)
    assert_error(g.post('/api/v1/jobs/%s/retry' % ja, None, token=bob), 404)
    assert ja not in [j['id'] for j in g.get('/api/v1/jobs', token=bob).json()['jobs']]
    # alice can; an admin can see and cancel anyone's
    assert g.get('/api/v1/jobs/' + ja, token=alice).status == 200
    assert g.get('/api/v1/jobs/' + jb).status == 200
    r = g.post('/api/v1/jobs/%s/cancel' % jb, None)
    assert r.status == 202, r
    job = r.json()
    assert job['state'] == 'cancelled' and job['reason'] == 'cancelled by admin', job
    assert all(s['state'] == 'cancelled' for s in job['stages']), job['stages']
    assert job['finished_at'] and job['current_stage'] is None, job
    # cancelled is finished: a second cancel is 409
    assert_error(g.post('/api/v1/jobs/%s/cancel' % jb, None, token=bob), 409, 'conflict')
    # retry: only failed or cancelled jobs; a queued one is 409
    assert_error(g.post('/api/v1/jobs/%s/retry' % ja, None, token=alice), 409, 'conflict')
    r = g.post('/api/v1/jobs/%s/retry' % jb, None, token=bob)
    assert r.status == 202, r
    job = r.json()
    assert job['state'] == 'queued' and job['finished_at'] is None, job
    assert all(s['state'] == 'queued' for s in job['stages'])
    assert job['stages'][0]['reason'] == 'waiting_for_worker'
    assert g.post('/api/v1/jobs/%s/cancel' % ja, None, token=alice).status == 202


def test_datasets(g):
    tiny = register_tiny(g)
    assert tiny['name'] == 'tiny' and tiny['classes'] == 10, tiny
    assert tiny['train'] == {'count': 20, 'shape': [1, 28, 28]}, tiny
    assert tiny['test']['count'] == 10 and len(tiny['files']) == 4, tiny
    plain = make_idx(os.path.join(g.tmp, 'plain'), n=30, classes=3, gz=False)
    r = g.post('/api/v1/datasets', {'name': 'plain', 'format': 'idx', 'path': plain})
    assert r.status == 201 and r.json()['classes'] == 3, r
    assert r.header('Location') == '/api/v1/datasets/plain'
    assert_error(g.post('/api/v1/datasets', {'name': 'tiny', 'format': 'idx', 'path': plain}),
                 409, 'conflict')
    empty = os.path.join(g.tmp, 'empty')
    os.makedirs(empty)
    assert_error(g.post('/api/v1/datasets', {'name': 'e', 'format': 'idx', 'path': empty}),
                 422, field='path')
    assert_error(g.post('/api/v1/datasets', {'name': 'e', 'format': 'cifar10-bin',
                                             'path': empty}), 422, field='path')
    assert_error(g.post('/api/v1/datasets', {'name': 'e', 'format': 'png', 'path': plain}),
                 422, field='format')
    assert_error(g.post('/api/v1/datasets', {'name': 'e', 'format': 'idx', 'path': 'rel'}),
                 422, field='path')
    assert_error(g.post('/api/v1/datasets', {'name': 'Bad Name', 'format': 'idx',
                                             'path': plain}), 422, field='name')
    assert_error(g.post('/api/v1/datasets', {'name': 'e', 'format': 'idx', 'path': plain,
                                             'x': 1}), 422, field='x')
    user = issue_token(g, 'erin')['token']
    assert_error(g.post('/api/v1/datasets', {'name': 'u', 'format': 'idx', 'path': plain},
                        token=user), 403)
    assert g.get('/api/v1/datasets/tiny', token=user).json()['path'] == tiny['path']
    assert_error(g.get('/api/v1/datasets/nosuch'), 404)
    names = [d['name'] for d in g.get('/api/v1/datasets', token=user).json()['datasets']]
    if os.path.isdir('/usr/share/datasets/fashion-mnist'):
        assert 'fashion-mnist' in names, names
        fm = g.get('/api/v1/datasets/fashion-mnist').json()
        assert fm['train']['count'] == 60000 and fm['classes'] == 10, fm
    assert {'plain', 'tiny'} <= set(names) and names == sorted(names), names
    # pagination over data sets
    first = g.get('/api/v1/datasets?limit=1').json()
    assert len(first['datasets']) == 1 and first['next_cursor'], first
    rest = g.get('/api/v1/datasets?limit=100&cursor=' + first['next_cursor']).json()
    assert [d['name'] for d in first['datasets'] + rest['datasets']] == names


# ---- static files -------------------------------------------------------------

def make_web(tmp):
    web = os.path.join(tmp, 'web')
    os.makedirs(os.path.join(web, 'sub'))
    with open(os.path.join(web, 'index.html'), 'w') as f:
        f.write('<!doctype html><title>gppd</title>')
    with open(os.path.join(web, 'app.js'), 'w') as f:
        f.write('console.log(1);')
    with open(os.path.join(web, 'sub', 'index.html'), 'w') as f:
        f.write('<p>sub</p>')
    with open(os.path.join(tmp, 'secret.txt'), 'w') as f:
        f.write('TOP-SECRET')
    os.symlink(os.path.join(tmp, 'secret.txt'), os.path.join(web, 'link.txt'))
    os.symlink(os.path.join(web, 'app.js'), os.path.join(web, 'inlink.js'))
    os.symlink('/etc', os.path.join(web, 'etc'))
    return web


def test_static(g):
    r = g.get('/', token=None)
    assert r.status == 200 and r.body.startswith(b'<!doctype html>'), r
    assert r.header('Content-Type').startswith('text/html'), r.headers
    r = g.get('/app.js', token=None)
    assert r.status == 200 and r.header('Content-Type').startswith('text/javascript'), r
    assert g.get('/sub/', token=None).body == b'<p>sub</p>'
    assert g.get('/sub', token=None).body == b'<p>sub</p>'
    assert g.get('/inlink.js', token=None).status == 200      # a link inside the root is fine
    assert_error(g.get('/nosuch.css', token=None), 404)
    attacks = ['/../secret.txt', '/%2e%2e/secret.txt', '/sub/../../secret.txt',
               '/sub/%2e%2e/%2e%2e/secret.txt', '/..%2fsecret.txt', '/%2e%2e%2fsecret.txt',
               '/link.txt', '/etc/passwd', '//etc/passwd', '/./index.html', '/sub/./index.html',
               '/..\\secret.txt', '/%5c..%5csecret.txt', '/index.html%00.png',
               '/%00', '/sub/%2', '/%zz']
    for a in attacks:
        out = g.raw(('GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' % a).encode())
        status = int(out.split(b' ', 2)[1])
        assert status in (400, 404), (a, out[:300])
        assert b'TOP-SECRET' not in out and b'root:' not in out, (a, out)
    out = g.raw(b'GET /index.html%00.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    assert out.startswith(b'HTTP/1.1 400'), out[:100]


# ---- restart, durability, start-up ---------------------------------------------

def test_restart_keeps_jobs(g):
    register_tiny(g)
    ids = [submit(g).json()['id'] for _ in range(3)]
    g.post('/api/v1/jobs/%s/cancel' % ids[1], None)
    admin = g.token('admin')
    before = {i: g.get('/api/v1/jobs/' + i).json() for i in ids}
    g.stop()
    g.start()
    assert g.token('admin') == admin            # not recreated
    for i in ids:
        after = g.get('/api/v1/jobs/' + i).json()
        assert after == before[i], (before[i], after)
    assert 'created token' not in g.log().split('msg="stopped"')[-1]


def test_kill9_keeps_acknowledged(g):
    register_tiny(g)
    ids = []
    for i in range(20):
        r = submit(g, {'dataset': 'tiny', 'model': 'lenet5', 'name': 'k%d' % i})
        assert r.status == 201
        ids.append(r.json()['id'])
    g.post('/api/v1/jobs/%s/cancel' % ids[-1], None)
    g.kill9()
    g.start()                                     # the lock died with the process
    listed = [j['id'] for j in g.get('/api/v1/jobs?limit=500').json()['jobs']]
    assert listed == list(reversed(ids)), listed
    assert g.get('/api/v1/jobs/' + ids[-1]).json()['state'] == 'cancelled'


def test_second_instance_refused(g):
    other = Gppd(g.tmp, data_dir=g.data_dir)
    other.log_path = os.path.join(g.tmp, 'other.log')
    p = subprocess.run(other.cmdline(), capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, p
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith('gppd: another gppd is using the data folder'), p.stderr
    assert g.get('/api/v1/health', token=None).status == 200


def test_newer_database_refused(g):
    g.stop()
    db = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    db.execute("INSERT INTO schema_migrations VALUES (99, 'from_the_future', 0)")
    db.commit()
    db.close()
    p = subprocess.run(g.cmdline(), capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, p
    assert re.search(r'^gppd: gppd\.db was written by a newer gppd \(migration 99 > \d+\);'
                     r' upgrade gppd$', p.stderr.strip().splitlines()[-1]), p.stderr
    db = sqlite3.connect(os.path.join(g.data_dir, 'gppd.db'))
    db.execute('DELETE FROM schema_migrations WHERE version = 99')
    db.commit()
    db.close()
    g.start()


def test_config_file(g):
    g.stop()
    conf = os.path.join(g.tmp, 'gppd.conf')
    other = os.path.join(g.tmp, 'data-from-conf')
    with open(conf, 'w') as f:
        f.write('# test\nlisten = 127.0.0.1:1\ndata-dir = %s\nworker-grace = 5\n' % other)
    # the flags win over the file: the port and the data folder come from them
    g.args = ['--config', conf]
    g.start()
    assert g.get('/api/v1/health', token=None).status == 200
    assert not os.path.exists(other)
    g.stop()
    with open(conf, 'w') as f:
        f.write('listen = 127.0.0.1:0\n\nnope = 1\n')
    p = subprocess.run(g.cmdline(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p
    assert p.stderr.strip() == "gppd: %s:3: unknown key 'nope'" % conf, p.stderr
    g.args = []
    g.start()


def test_bad_flags(g):
    taken = '127.0.0.1:%d' % g.port          # this gppd listens there
    for args, want in ((['--listen', 'nowhere'], 'not ADDR:PORT'),
                       (['--worker-grace', 'abc'], 'worker-grace'),
                       (['--frobnicate'], "unknown option '--frobnicate'"),
                       (['--listen', taken], 'cannot listen on ' + taken)):
        p = subprocess.run([GPPD, '--data-dir', os.path.join(g.tmp, 'bad'),
                            '--worker-listen', '127.0.0.1:0'] + args,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0, (args, p)
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith('gppd: ') and want in last, (args, p.stderr)
    p = subprocess.run([GPPD, '--help'], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and '--worker-grace' in p.stdout, p
    p = subprocess.run([GPPD, '--version'], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith('gppd '), p


def test_token_file_recovery(g):
    """A token file written but not committed (crash) is imported at start."""
    g.stop()
    os.remove(os.path.join(g.data_dir, 'gppd.db'))
    for ext in ('-wal', '-shm'):
        if os.path.exists(os.path.join(g.data_dir, 'gppd.db' + ext)):
            os.remove(os.path.join(g.data_dir, 'gppd.db' + ext))
    admin = g.token('admin')
    g.start()
    assert g.token('admin') == admin
    assert 'imported token' in g.log()
    assert g.get('/api/v1/jobs').status == 200


# ---- hostile ------------------------------------------------------------------

def test_hostile_requests(g):
    cc = b'Connection: close\r\n'
    junk = [b'GARBAGE\r\n\r\n', b'GET\r\n\r\n', b'\x00\x01\x02\r\n\r\n',
            b'GET / HTTP/9.9\r\n\r\n',
            b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\n' + cc + b'X-Big: ' + b'a' * 200000
            + b'\r\n\r\n',
            b'POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n' + cc + b'Content-Length: -5\r\n\r\n',
            b'POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n' + cc
            + b'Content-Length: 99999999999999999999\r\n\r\n',
            b'GET /api/v1/jobs?limit=' + b'9' * 5000 + b' HTTP/1.1\r\nHost: x\r\n' + cc + b'\r\n',
            b'GET /api/v1/jobs?limit=%00 HTTP/1.1\r\nHost: x\r\n' + cc + b'Authorization: Bearer '
            + g.token().encode() + b'\r\n\r\n']
    for j in junk:
        out = g.raw(j, timeout=3)
        if out:
            status = int(out.split(b' ', 2)[1])
            assert 400 <= status < 500 or status == 505, (j[:60], out[:200])
    # ids that are not UTF-8 in every resource: the error is still valid JSON
    # (strict UTF-8), the bad bytes shown as U+FFFD
    for path in ['/api/v1/jobs/%FF%FEx', '/api/v1/jobs/%C3%28/events',
                 '/api/v1/workers/%E2%82/drain', '/api/v1/jobs/%80/metrics']:
        method = 'POST' if path.endswith('drain') else 'GET'
        out = g.raw(('%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                     'Authorization: Bearer %s\r\nContent-Length: 0\r\n\r\n'
                     % (method, path, g.token())).encode(), timeout=5)
        head, _, body = out.partition(b'\r\n\r\n')
        status = int(head.split(b' ', 2)[1])
        assert status == 404, (path, out[:300])
        doc = json.loads(body.decode('utf-8', errors='strict'))
        assert doc['error']['code'] == 'not_found', (path, doc)
        assert '\ufffd' in doc['error']['message'], (path, doc)
    # a slow client that never finishes its headers does not block others
    s = socket.create_connection(('127.0.0.1', g.port))
    s.sendall(b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\n')
    for _ in range(20):
        assert g.get('/api/v1/health', token=None).status == 200
    s.close()
    # a client gone mid-body
    s = socket.create_connection(('127.0.0.1', g.port))
    s.sendall(('POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
               'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"da'
               % g.token('admin')).encode())
    s.close()
    # keep-alive: many requests on one connection
    conn = http.client.HTTPConnection('127.0.0.1', g.port, timeout=30)
    for _ in range(50):
        conn.request('GET', '/api/v1/jobs', headers={'Authorization': 'Bearer ' + g.token()})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
    conn.close()
    assert g.get('/api/v1/health', token=None).status == 200


GROUPS = {
    'basics': [test_health, test_openapi_public, test_not_found_and_method, test_prometheus],
    'auth': [test_token_files_and_no_plaintext, test_401_cases, test_roles],
    'submit': [test_submit_minimal, test_submit_errors],
    'idempotency': [test_idempotency],
    'pagination': [test_pagination],
    'filters': [test_filters],
    'isolation': [test_isolation_cancel_retry],
    'datasets': [test_datasets],
    'static': [test_static],
    'restart': [test_restart_keeps_jobs, test_kill9_keeps_acknowledged],
    'startup': [test_second_instance_refused, test_newer_database_refused, test_config_file,
                test_bad_flags, test_token_file_recovery],
    'hostile': [test_hostile_requests],
}


def run_one(fn):
    tmp = tempfile.mkdtemp(prefix='gppd-http-')
    g = None
    try:
        web = make_web(tmp) if fn is test_static else None
        g = Gppd(tmp, web_root=web)
        g.start()
        fn(g)
        g.stop()
        return True
    except Exception:
        traceback.print_exc()
        if g:
            print('---- gppd log (tail) ----\n' + g.log()[-4000:])
        return False
    finally:
        if g and g.proc:
            g.proc.kill()
            g.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    global GPPD
    if len(argv) < 3 or argv[2] not in GROUPS:
        sys.stderr.write(__doc__ + '\ngroups: %s\n' % ' '.join(GROUPS))
        return 2
    GPPD = os.path.abspath(argv[1])
    tests = [t for t in GROUPS[argv[2]] if len(argv) == 3 or t.__name__ in argv[3:]]
    failed = 0
    for t in tests:
        t0 = time.time()
        ok = run_one(t)
        print('%s %s (%.1f s)' % ('ok  ' if ok else 'FAIL', t.__name__, time.time() - t0),
              flush=True)
        failed += 0 if ok else 1
    print('%d passed, %d failed' % (len(tests) - failed, failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
