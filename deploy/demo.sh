#!/usr/bin/env bash
# The first README command: from a fresh Debian/Ubuntu machine to a finished
# Grow-Push-Prune job on Fashion-MNIST.
#
#   deploy/demo.sh [--stop-after] [--no-deps] [--threads N]
#
# Installs what is missing (deploy/install-deps.sh, sudo when not root),
# builds with meson into build/, starts gppd on 127.0.0.1:8080 with two local
# CPU workers and its data in ./gpp-data, submits the default job
# {"dataset": "fashion-mnist", "model": "lenet5"}, follows it live (a progress
# bar per stage from the job's event stream, the numbers of every
# iteration), prints the dashboard URL and the admin token, and ends with the
# before/after table (params, FLOPs, accuracy, per-layer widths).  gppd keeps
# running for the dashboard (the script says how to stop it) unless
# --stop-after is given.  A gppd already answering on 127.0.0.1:8080 with
# ./gpp-data is reused.
#
#   --stop-after   stop gppd (SIGTERM) when the job has finished
#   --no-deps      skip deploy/install-deps.sh (everything is installed)
#   GPP_DEMO_JOB='{...}'   submit this job spec instead of the default one
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

stop_after=0 deps=1
for a in "$@"; do
  case "$a" in
    --stop-after) stop_after=1 ;;
    --no-deps) deps=0 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option $a (see --help)" >&2; exit 2 ;;
  esac
done

HOST=127.0.0.1 PORT=8080
URL="http://$HOST:$PORT"
DATA="$root/gpp-data"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# ---- 1. dependencies and the build ---------------------------------------------
if [ "$deps" = 1 ]; then
  say "installing what is missing (deploy/install-deps.sh)"
  deploy/install-deps.sh --no-browser
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "demo.sh: the Fashion-MNIST data set is missing (Debian package dataset-fashion-mnist)" >&2
  exit 1
fi

say "building into build/"
if [ ! -f build/build.ninja ]; then
  meson setup build >build-setup.log 2>&1 ||
    { tail -30 build-setup.log >&2; echo "demo.sh: meson setup failed (build-setup.log)" >&2; exit 1; }
fi
meson compile -C build gppd gpp-worker
if ! build/worker/gpp-worker --connect 127.0.0.1:1 --help >/dev/null 2>&1; then
  echo "demo.sh: build/worker/gpp-worker has no daemon mode (--connect)" >&2
  exit 1
fi

# ---- 2. gppd with two local workers ------------------------------------------------
mkdir -p -m 700 "$DATA"
gppd_pid=""
if curl -sf "$URL/api/v1/health" >/dev/null 2>&1; then
  if [ ! -f "$DATA/admin.token" ]; then
    echo "demo.sh: something else answers on $URL; stop it first" >&2
    exit 1
  fi
  say "gppd is already running on $URL; using it"
  gppd_pid=$(cat "$DATA/gppd.lock" 2>/dev/null || true)
else
  say "starting gppd on $URL (two local workers, data in gpp-data/, log in gpp-data/gppd.log)"
  nohup build/daemon/gppd --listen "$HOST:$PORT" --data-dir "$DATA" --local-workers 2 \
    --web-root "$root/web" >>"$DATA/gppd.log" 2>&1 &
  gppd_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "$URL/api/v1/health" >/dev/null 2>&1 && break
    if ! kill -0 "$gppd_pid" 2>/dev/null; then
      tail -20 "$DATA/gppd.log" >&2
      echo "demo.sh: gppd did not start (gpp-data/gppd.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
fi
TOKEN=$(cat "$DATA/admin.token")

# ---- 3. submit, follow, summarise ---------------------------------------------------
say "submitting ${GPP_DEMO_JOB:-the default job: {\"dataset\": \"fashion-mnist\", \"model\": \"lenet5\"}}"
status=0
GPPD_URL="$URL" GPPD_TOKEN="$TOKEN" GPP_DEMO_JOB="${GPP_DEMO_JOB:-}" python3 - <<'PY' || status=$?
import http.client, json, os, sys, time

URL = os.environ['GPPD_URL']
TOKEN = os.environ['GPPD_TOKEN']
host, port = URL.split('//')[1].split(':')
port = int(port)
TTY = sys.stdout.isatty()
AUTH = {'Authorization': 'Bearer ' + TOKEN}


def api(method, path, body=None):
    c = http.client.HTTPConnection(host, port, timeout=60)
    hdrs = dict(AUTH)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs['Content-Type'] = 'application/json'
    c.request(method, path, body=data, headers=hdrs)
    r = c.getresponse()
    doc = json.loads(r.read() or b'null')
    c.close()
    if r.status >= 400:
        sys.exit('gppd answered %d: %s' % (r.status, doc))
    return doc


for _ in range(300):       # the workers connect within a second or two
    if api('GET', '/api/v1/health')['workers'] >= 1:
        break
    time.sleep(0.1)

spec = json.loads(os.environ.get('GPP_DEMO_JOB') or '{"dataset": "fashion-mnist", "model": "lenet5"}')
job = api('POST', '/api/v1/jobs', spec)
jid = job['id']
spec = job['spec']
total = job['stages_total']
print('job %s: up to %d stages (train %d epochs, up to %d x push + prune: the loop stops when a'
      ' prune falls more than %g points of validation accuracy below the baseline), data %s'
      % (jid, total, spec['train']['epochs'], spec['iterations'],
         100 * spec['stop']['max_accuracy_drop'], spec['dataset']))
print('(the dashboard shows it live at %s/#/jobs/%s)\n' % (URL, jid))


def human(v):
    if v is None:
        return '-'
    for d, s in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if v >= d:
            return '%.2f%s' % (v / d, s)
    return '%.0f' % v


class Bar:
    def __init__(self):
        self.stage = None
        self.kind = ''
        self.frac = 0.0
        self.nums = {}
        self.t0 = time.time()
        self.last = 0.0

    def line(self):
        fill = int(self.frac * 30 + 0.5)
        bar = '#' * fill + '-' * (30 - fill)
        s = '  %02d/%02d %-9s [%s] %3.0f%%' % (self.stage + 1, total, self.kind, bar,
                                              self.frac * 100)
        n = self.nums
        if 'iteration' in n:
            s += '  it %d' % n['iteration']
        for k, f in (('loss', ' loss %.4f'), ('batch_accuracy', ' acc %.3f'),
                     ('images_per_s', ' %.0f img/s')):
            if n.get(k) is not None:
                s += f % n[k]
        return s

    def draw(self, force=False):
        if self.stage is None:
            return
        now = time.time()
        if not force and now - self.last < (0.1 if TTY else 10):
            return
        self.last = now
        if TTY:
            sys.stdout.write('\r\033[K' + self.line())
        else:
            sys.stdout.write(self.line() + '\n')
        sys.stdout.flush()

    def text(self, msg):
        if TTY and self.stage is not None:
            sys.stdout.write('\r\033[K')
        print(msg)
        self.draw(force=True)


bar = Bar()
last_id = 0
final = None
while final is None:
    try:
        c = http.client.HTTPConnection(host, port, timeout=120)
        hdrs = dict(AUTH, Accept='text/event-stream')
        if last_id:
            hdrs['Last-Event-ID'] = str(last_id)   # resume: nothing missed, nothing twice
        c.request('GET', '/api/v1/jobs/%s/events' % jid, headers=hdrs)
        r = c.getresponse()
        ev = {}
        while True:
            raw = r.readline()
            if not raw:
                break
            line = raw.decode('utf-8', 'replace').rstrip('\r\n')
            if line:
                if not line.startswith(':'):
                    k, _, v = line.partition(':')
                    ev[k] = v[1:] if v.startswith(' ') else v
                continue
            if 'data' not in ev:
                ev = {}
                continue
            last_id = int(ev.get('id', last_id))
            kind, d = ev.get('event'), json.loads(ev['data'])
            ev = {}
            if kind == 'stage':
                st = d['state']
                if st in ('assigned', 'running') and bar.stage != d['stage']:
                    if bar.stage is not None and TTY:
                        sys.stdout.write('\n')
                    bar.stage, bar.kind, bar.frac, bar.nums = d['stage'], d['kind'], 0.0, {}
                    bar.t0 = time.time()
                    bar.draw(force=True)
                elif st == 'succeeded':
                    bar.frac = 1.0
                    bar.draw(force=True)
                    s = api('GET', '/api/v1/jobs/' + jid)['stages'][d['stage']]
                    m = s.get('summary') or {}
                    bar.stage = None
                    print(('\r\033[K' if TTY else '') +
                          '  %02d/%02d %-9s params %-8s FLOPs %-8s val %.4f  test %.4f  (%.1f s, %s)'
                          % (d['stage'] + 1, total, d['kind'], human(m.get('params')),
                             human(m.get('flops')), m.get('val_accuracy') or 0,
                             m.get('test_accuracy') or 0, time.time() - bar.t0, s['worker']))
                elif st in ('skipped',):
                    print('  %02d/%02d %-9s skipped: %s' % (d['stage'] + 1, total, d['kind'],
                                                           d.get('reason') or ''))
                elif st in ('failed', 'cancelled') or (st == 'queued' and d.get('reason')):
                    bar.text('  stage %d %s: %s' % (d['stage'], st, d.get('reason') or ''))
            elif kind == 'progress':
                if d['stage'] == bar.stage:
                    bar.frac = d['progress']
                    bar.draw()
            elif kind == 'metrics':
                if d['stage'] == bar.stage:
                    for p in d['points']:
                        bar.nums[p['name']] = p['value']
                        bar.nums['iteration'] = max(bar.nums.get('iteration', 0), p['iteration'])
                    bar.draw()
            elif kind == 'log' and d.get('source', '').startswith('worker'):
                bar.text('    ' + d['message'])
            elif kind == 'job' and d['state'] in ('succeeded', 'failed', 'cancelled'):
                final = d
        c.close()
    except (OSError, http.client.HTTPException) as e:
        bar.text('  (event stream interrupted: %s; resuming after event %d)' % (e, last_id))
        time.sleep(1)
    if final is None:
        j = api('GET', '/api/v1/jobs/' + jid)
        if j['state'] in ('succeeded', 'failed', 'cancelled'):
            final = {'state': j['state'], 'reason': j['reason']}

if TTY:
    sys.stdout.write('\r\033[K')
job = api('GET', '/api/v1/jobs/' + jid)
print('\njob %s %s%s' % (jid, job['state'], (': ' + job['reason']) if job['reason'] else ''))
if job['state'] != 'succeeded':
    sys.exit(1)

# the before/after table
arch = api('GET', '/api/v1/jobs/%s/architecture' % jid)
by_stage = {s['stage']: s for s in arch['stages']}
summ = job['summary']
cols = [('baseline', summ['baseline']), ('accuracy-first', summ['accuracy_first']),
        ('size-first', summ['size_first'])]
print('\n%-16s' % '' + ''.join(' %16s' % h for h, _ in cols))
print('%-16s' % 'stage' + ''.join(' %16s' % ('%02d %s' % (c['stage'], c['kind'])) for _, c in cols))
for key, label, fmt in (('params', 'params', human), ('flops', 'FLOPs (2xMACs)', human),
                        ('val_accuracy', 'val accuracy', lambda v: '%.4f' % v),
                        ('test_accuracy', 'test accuracy', lambda v: '%.4f' % v)):
    print('%-16s' % label + ''.join(' %16s' % fmt(c[key]) for _, c in cols))
base_layers = by_stage[summ['baseline']['stage']]['layers']
for layer in base_layers:
    row = '%-16s' % layer['name']
    for _, c in cols:
        ws = {l['name']: l['width'] for l in by_stage[c['stage']]['layers']}
        row += ' %16s' % ws.get(layer['name'], '-')
    print(row)
b, s = summ['baseline'], summ['size_first']
print('\nsize-first: %.1fx fewer params, %.1fx fewer FLOPs, test accuracy %+.2f points'
      % (b['params'] / s['params'], b['flops'] / s['flops'],
         100 * (s['test_accuracy'] - b['test_accuracy'])))
PY

say "the dashboard"
echo "  $URL/   (sign in with the admin token)"
echo "  admin token: $TOKEN"
echo "  curl -H \"Authorization: Bearer \$(cat gpp-data/admin.token)\" $URL/api/v1/jobs"
if [ "$stop_after" = 1 ] && [ -n "$gppd_pid" ]; then
  say "stopping gppd (pid $gppd_pid)"
  kill -TERM "$gppd_pid"
  for _ in $(seq 1 300); do kill -0 "$gppd_pid" 2>/dev/null || break; sleep 0.1; done
else
  echo
  echo "gppd keeps running (pid ${gppd_pid:-?}, log gpp-data/gppd.log); stop it with:"
  echo "  kill ${gppd_pid:-\$(cat gpp-data/gppd.lock)}"
fi
exit "$status"
