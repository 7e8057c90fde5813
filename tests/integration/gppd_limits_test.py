#!/usr/bin/env python3
"""gppd's HTTP limits (issue 6): one client cannot starve the others.

usage: gppd_limits_test.py PATH/TO/gppd [TEST...]

Each test starts the real gppd on 127.0.0.1 port 0 with a temporary data
folder (the harness of gppd_http_test.py) and stops it with SIGTERM (exit 0).

- slowloris: a client sending its headers one byte every 0.3 s, and one
  sending its body the same way, are cut off once the request deadline
  passes (libmicrohttpd's own timeout counts idle time only, so they would
  live forever without it), while a keep-alive client asking every 0.2 s on
  one connection for longer than the deadline is answered quickly throughout
  and never cut.
- per_ip: more idle connections from 127.0.0.1 than the per-IP limit: the
  excess is closed at once, a client from 127.0.0.2 is answered quickly
  meanwhile, a new one from 127.0.0.1 is refused cleanly (closed, no hang),
  and after the deadline the idle ones are gone and 127.0.0.1 is served again.
- total: idle connections from 127.0.0.2..5 (1024, each address within its
  limit) fill the connection limit; libmicrohttpd then stops accepting, so
  a new client waits in the backlog - until the deadline clears the idle
  ones, when it is served (a bounded wait, not a hang).
- headers: oversized header lines, too many headers and a huge URL are
  refused with a 4xx and the connection closed; the API keeps answering.

The deadline is read from gppd's own /metrics help text (API_REQUEST_DEADLINE_S
in daemon/api.c); the per-IP limit is API_PER_IP_LIMIT there.
Standard library only; run with /usr/bin/python3.
"""
import http.client
import os
import re
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gppd_http_test as H  # noqa: E402  (the Gppd harness)

PER_IP_LIMIT = 256          # API_PER_IP_LIMIT in daemon/api.c
CONN_LIMIT = 1000           # API_CONN_LIMIT (less when gppd's RLIMIT_NOFILE is lower)
QUICK = 3.0                 # seconds: "answered quickly" (generous for ASan and a busy box)


def deadline_of(g):
    r = g.get('/metrics', token=None)
    assert r.status == 200, r
    m = re.search(rb'did not arrive whole within (\d+) s', r.body)
    assert m, r.body[:2000]
    return int(m.group(1))


def slow_counter(g):
    r = g.get('/metrics', token=None)
    m = re.search(rb'^gppd_http_slow_connections_closed_total (\d+)$', r.body, re.M)
    assert m, r.body[:2000]
    return int(m.group(1))


class Slow(threading.Thread):
    """Sends `head`, then one byte of `drip` every `every` seconds until the
    server closes the connection; records when that happened and what came."""

    def __init__(self, port, head, drip, every=0.3, limit=60):
        super().__init__(daemon=True)
        self.s = socket.create_connection(('127.0.0.1', port), timeout=5)
        self.head, self.drip, self.every, self.limit = head, drip, every, limit
        self.t0 = time.time()
        self.closed_after = None
        self.received = b''
        self.sent = 0

    def run(self):
        try:
            self.s.sendall(self.head)
            self.s.settimeout(self.every)
            i = 0
            while time.time() - self.t0 < self.limit:
                try:
                    chunk = self.s.recv(4096)
                    if not chunk:
                        break
                    self.received += chunk
                    continue
                except socket.timeout:
                    pass
                try:
                    self.s.send(self.drip[i % len(self.drip):i % len(self.drip) + 1])
                    self.sent += 1
                    i += 1
                except OSError:
                    break
            else:
                return                      # never closed: closed_after stays None
        except OSError:
            pass
        self.closed_after = time.time() - self.t0
        self.s.close()


def test_slowloris(g):
    deadline = deadline_of(g)
    assert 1 <= deadline <= 60, deadline
    before = slow_counter(g)
    head = b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\n'
    loris = Slow(g.port, head, b'X-Slow: ' + b'a' * 1000)
    body_head = ('POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
                 'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"dataset":'
                 % g.token()).encode()
    slow_body = Slow(g.port, body_head, b' ')
    loris.start()
    slow_body.start()
    # one keep-alive client, busy for longer than the deadline: never cut, always quick
    conn = http.client.HTTPConnection('127.0.0.1', g.port, timeout=30)
    worst, n = 0.0, 0
    t_end = time.time() + deadline + 3
    while time.time() < t_end or loris.is_alive() or slow_body.is_alive():
        t = time.time()
        conn.request('GET', '/api/v1/jobs?limit=1', headers={'Authorization': 'Bearer ' + g.token()})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        worst = max(worst, time.time() - t)
        n += 1
        time.sleep(0.2)
        assert time.time() - loris.t0 < deadline + 30, 'the slow clients were never cut off'
    conn.close()
    assert worst < QUICK, 'a request took %.2f s while slow clients were connected' % worst
    assert n >= deadline * 3, n
    for name, c in (('slowloris headers', loris), ('slow body', slow_body)):
        assert c.closed_after is not None, name + ': never closed'
        # it kept its connection while it was within the deadline, and lost it
        # soon after (the reaper looks every 0.25 s)
        assert deadline - 0.5 <= c.closed_after <= deadline + 5, (name, c.closed_after)
        assert c.sent >= (deadline - 1) / 0.3 * 0.8, (name, c.sent)
        assert c.received.startswith(b'HTTP/1.1 408'), (name, c.received[:200])
    assert slow_counter(g) >= before + 2, (before, slow_counter(g))
    assert 'closed slow or idle connections' in g.log(), g.log()[-2000:]


def connect_from(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(('127.0.0.1', port))
    return s


def is_closed(s, wait):
    """True when the peer closed s (EOF or reset) within `wait` seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b''
    except socket.timeout:
        return False
    except OSError:
        return True


def closed_now(socks):
    """The sockets of `socks` the peer has closed (EOF or reset) by now."""
    p = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        p.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in p.poll(0) if is_closed(by_fd[fd], 0.5)]


def get_from(src, port, token, timeout=10):
    """GET /api/v1/jobs from source address src; (status or None, seconds)."""
    t = time.time()
    s = connect_from(src, port)
    s.settimeout(timeout)
    try:
        s.sendall(('GET /api/v1/jobs?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                   'Authorization: Bearer %s\r\n\r\n' % token).encode())
        out = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        out = b''
    finally:
        s.close()
    status = int(out.split(b' ', 2)[1]) if out.startswith(b'HTTP/1.') else None
    return status, time.time() - t


def test_per_ip(g):
    deadline = deadline_of(g)
    token = g.token()
    socks = [connect_from('127.0.0.1', g.port) for _ in range(PER_IP_LIMIT + 40)]
    t_open = time.time()
    # gppd accepts them all and closes what is over the limit at once (a busy
    # box may take a moment to get through the backlog)
    refused = []
    while time.time() - t_open < 5:
        refused += closed_now([s for s in socks if s not in refused])
        if len(socks) - len(refused) <= PER_IP_LIMIT:
            break
        time.sleep(0.1)
    held = [s for s in socks if s not in refused]
    # the excess was closed at once; the rest is held
    assert len(refused) >= 40 and len(held) <= PER_IP_LIMIT, (len(refused), len(held))
    assert len(held) >= PER_IP_LIMIT - 8, len(held)
    # another address is served quickly meanwhile
    for _ in range(5):
        status, secs = get_from('127.0.0.2', g.port, token)
        assert status == 200 and secs < QUICK, (status, secs)
    # a new connection from the full address is refused cleanly: closed, no
    # hang.  (If a few held ones were dropped meanwhile, fill the address up
    # first: of limit - held + 1 new connections at least one is over it.)
    t = time.time()
    extra = [connect_from('127.0.0.1', g.port) for _ in range(PER_IP_LIMIT - len(held) + 1)]
    gone = []
    while not gone and time.time() - t < QUICK:
        gone = closed_now(extra)
        time.sleep(0.05)
    assert gone, 'a connection over the per-IP limit was neither served nor closed'
    assert time.time() - t < QUICK + 0.5
    held += [s for s in extra if s not in gone]
    socks += extra
    assert len(held) <= PER_IP_LIMIT, len(held)
    # the idle ones are closed once the deadline passes; then 127.0.0.1 is served again
    remaining = held
    while remaining and time.time() - t_open < deadline + 10:
        gone = closed_now(remaining)
        remaining = [s for s in remaining if s not in gone]
        time.sleep(0.2)
    assert not remaining, '%d idle connections outlived the deadline' % len(remaining)
    assert time.time() - t_open >= deadline - 1, time.time() - t_open
    status, secs = get_from('127.0.0.1', g.port, token)
    assert status == 200 and secs < QUICK, (status, secs)
    for s in socks:
        s.close()


def test_total(g):
    """Past the total limit libmicrohttpd stops accepting: new connections
    wait in the kernel's backlog.  The deadline bounds that wait: the idle
    connections holding every slot are closed and the waiting client is
    served, after about the deadline and well before forever."""
    deadline = deadline_of(g)
    token = g.token()
    socks = [connect_from('127.0.0.%d' % (2 + i // PER_IP_LIMIT), g.port)
             for i in range(4 * PER_IP_LIMIT)]       # each address within its limit
    t_open = time.time()
    time.sleep(1)
    assert len(closed_now(socks)) <= len(socks) - CONN_LIMIT + 8
    status, secs = get_from('127.0.0.6', g.port, token, timeout=deadline + 20)
    waited = time.time() - t_open
    assert status == 200, status
    # it waited for a slot (the limit holds) and got one once the deadline
    # cleared the idle connections
    assert deadline - 2 <= waited <= deadline + 8, waited
    remaining = socks
    while remaining and time.time() - t_open < 2 * deadline + 10:
        gone = closed_now(remaining)
        remaining = [s for s in remaining if s not in gone]
        time.sleep(0.2)
    assert not remaining, '%d idle connections outlived the deadline' % len(remaining)
    status, secs = get_from('127.0.0.6', g.port, token)
    assert status == 200 and secs < QUICK, (status, secs)
    for s in socks:
        s.close()


def raw_status(g, data):
    out = g.raw(data, timeout=10)
    assert out.startswith(b'HTTP/1.'), out[:200]
    return int(out.split(b' ', 2)[1])


def test_headers(g):
    cc = b'Connection: close\r\n'
    start = b'GET /api/v1/health HTTP/1.1\r\nHost: x\r\n' + cc
    # one header line larger than the per-connection memory (64 KiB)
    st = raw_status(g, start + b'X-Big: ' + b'a' * 100000 + b'\r\n\r\n')
    assert st in (400, 413, 431), st
    # many headers adding up past it
    st = raw_status(g, start + b''.join(b'X-H%d: %s\r\n' % (i, b'b' * 500) for i in range(300))
                    + b'\r\n')
    assert st in (400, 413, 431), st
    # a huge URL
    st = raw_status(g, b'GET /api/v1/jobs?x=' + b'c' * 100000 + b' HTTP/1.1\r\nHost: x\r\n' + cc
                    + b'\r\n')
    assert st in (400, 414, 431), st
    # headers within the limit are fine
    r = g.request('GET', '/api/v1/jobs?limit=1', headers={'X-Fine': 'd' * 4000})
    assert r.status == 200, r
    t = time.time()
    assert g.get('/api/v1/health', token=None).status == 200
    assert time.time() - t < QUICK


TESTS = [test_slowloris, test_per_ip, test_total, test_headers]


def run_one(fn):
    tmp = tempfile.mkdtemp(prefix='gppd-limits-')
    g = None
    try:
        g = H.Gppd(tmp)
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
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    H.GPPD = os.path.abspath(argv[1])
    tests = [t for t in TESTS if len(argv) == 2 or t.__name__ in argv[2:]]
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
