// The dashboard's plain modules under node (no browser): the fetch-based
// Server-Sent Events reader against a scripted text/event-stream server
// (framing, ids, Last-Event-ID on reconnect, retry:, errors), and the pure
// helpers the views rely on (spec form parsing, API field paths, metric
// grouping, series alignment).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

// The modules read the token from sessionStorage, as in a browser tab.
const store = new Map([['gppd.token', 'tok-123']]);
globalThis.sessionStorage = {
  getItem: (k) => (store.has(k) ? store.get(k) : null),
  setItem: (k, v) => store.set(k, String(v)),
  removeItem: (k) => store.delete(k),
};

const { openEvents } = await import('../../web/js/sse.js');
const { readField, fieldFor, FIELDS, setPath, FieldError } = await import('../../web/js/jobspec.js');
const { groupNames, readMetrics, eventPoints, stageLayout, onSteps, stepAt } = await import('../../web/js/metrics.js');
const { alignSeries } = await import('../../web/js/charts.js');
const { pageOf } = await import('../../web/js/api.js');
const { readJob, stageLabel, recoverNote } = await import('../../web/js/model.js');

/** A server whose handler gets (req, res, n) with n the connection count. */
async function server(handler) {
  let n = 0;
  const srv = http.createServer((req, res) => handler(req, res, ++n));
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}`, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }) };
}

function waitFor(pred, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - t0 > ms) return reject(new Error('timed out'));
      setTimeout(tick, 10);
    };
    tick();
  });
}

test('the SSE reader parses events, resumes with Last-Event-ID after a drop, and honours retry:', async () => {
  const seen = [];
  const srv = await server((req, res, n) => {
    seen.push({ auth: req.headers.authorization, last: req.headers['last-event-id'], accept: req.headers.accept, at: Date.now() });
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    if (n === 1) {
      res.write('retry: 300\n\n: a comment\n\n');
      res.write('id: 1\nevent: stage\ndata: {"stage":0,"state":"running"}\n\n');
      res.write('id: 2\r\ndata: line one\r\ndata:line two\r\n\r\n');
      res.end(); // the connection drops
    } else if (n === 2) {
      // Split inside a UTF-8 character and between \r and \n.
      const text = Buffer.from('id: 3\nevent: log\ndata: {"message":"ça marche"}\r\n\r\n');
      const cut = text.indexOf(Buffer.from('ç')) + 1;
      res.write(text.subarray(0, cut));
      setTimeout(() => {
        const cr = text.lastIndexOf(0x0d);
        res.write(text.subarray(cut, cr));
        setTimeout(() => res.write(text.subarray(cr)), 30);
      }, 30);
      // stays open until the client closes
    }
  });
  const events = [];
  const states = [];
  const es = openEvents(`${srv.url}/api/v1/jobs/j1/events`, {
    onevent: (e) => events.push(e),
    onstate: (s) => states.push(s),
  });
  try {
    await waitFor(() => events.length === 3);
    assert.deepEqual(events[0], { type: 'stage', data: { stage: 0, state: 'running' }, id: '1' });
    assert.deepEqual(events[1], { type: 'message', data: 'line one\nline two', id: '2' });
    assert.deepEqual(events[2], { type: 'log', data: { message: 'ça marche' }, id: '3' });
    assert.equal(seen.length, 2);
    assert.equal(seen[0].auth, 'Bearer tok-123');
    assert.equal(seen[0].accept, 'text/event-stream');
    assert.equal(seen[0].last, undefined);
    assert.equal(seen[1].last, '2'); // resumed after the last id it saw
    const gap = seen[1].at - seen[0].at;
    assert.ok(gap >= 200 && gap < 1500, `reconnected after ${gap} ms with retry: 300`);
    assert.deepEqual(states.slice(0, 4), ['connecting', 'open', 'retrying', 'connecting']);
    assert.equal(es.lastEventId(), '3');
  } finally {
    es.close();
    await srv.close();
  }
  assert.equal(states[states.length - 1], 'closed');
});

test('the SSE reader stops on a client error and backs off on server errors', async () => {
  const hits = [];
  const srv = await server((req, res) => {
    hits.push({ url: req.url, at: Date.now() });
    if (req.url.includes('missing')) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end('{"error":{"code":"not_found","message":"no such endpoint","field":null}}');
    } else {
      res.writeHead(503, { 'Content-Type': 'application/json' });
      res.end('{"error":{"code":"unavailable","message":"busy"}}');
    }
  });
  try {
    let err = null;
    const es1 = openEvents(`${srv.url}/missing/events`, { onerror: (e) => { err = e; } });
    await waitFor(() => err !== null);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'not_found');
    assert.equal(err.message, 'no such endpoint');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(hits.filter((h) => h.url.includes('missing')).length, 1, 'a 404 is not retried');
    es1.close();

    const waits = [];
    const es2 = openEvents(`${srv.url}/busy/events`, { onstate: (s, info) => { if (s === 'retrying') waits.push(info.wait); } });
    await waitFor(() => waits.length >= 2, 8000);
    es2.close();
    assert.ok(waits[0] >= 800 && waits[0] <= 1200, `first wait ${waits[0]}`);
    assert.ok(waits[1] >= 1600 && waits[1] <= 2400, `second wait ${waits[1]} doubles`);
  } finally {
    await srv.close();
  }
});

test('spec form fields read text into JSON and refuse what is not of their type', () => {
  const f = (p) => FIELDS.find((x) => x.path === p);
  assert.deepEqual(readField(f('prune.ratio'), '0.3'), { set: false, value: 0.3 });
  assert.deepEqual(readField(f('prune.ratio'), ' 1.5 '), { set: true, value: 1.5 });
  assert.deepEqual(readField(f('push.eps'), '1e-6'), { set: false, value: 1e-6 });
  assert.throws(() => readField(f('train.lr'), 'fast'), (e) => e instanceof FieldError && e.field === 'train.lr');
  assert.deepEqual(readField(f('stop.target_params'), ''), { set: false, value: null });
  assert.deepEqual(readField(f('stop.target_params'), '20000'), { set: true, value: 20000 });
  assert.deepEqual(readField(f('prune.reconstruct'), '', true), { set: true, value: true });
  assert.deepEqual(readField(f('device'), 'gpu'), { set: true, value: 'gpu' });
  assert.deepEqual(readField(f('labels'), 'gpu=a100, site = lab2'), { set: true, value: { gpu: 'a100', site: 'lab2' } });
  assert.throws(() => readField(f('labels'), 'gpu'), FieldError);
  assert.deepEqual(readField(f('grow.widths'), '64, 96 128,16,32,32'), { set: true, value: [64, 96, 128, 16, 32, 32] });
  assert.deepEqual(readField(f('dataset'), '{"format":"idx","path":"/d"}'), { set: true, value: { format: 'idx', path: '/d' } });
  assert.throws(() => readField(f('model'), '[{"op":'), FieldError);
  const spec = {};
  setPath(spec, 'prune.ratio', 0.5);
  setPath(spec, 'model', 'lenet5');
  assert.deepEqual(spec, { prune: { ratio: 0.5 }, model: 'lenet5' });
  // Every field path is unique, and an API field path finds its input.
  assert.equal(new Set(FIELDS.map((x) => x.path)).size, FIELDS.length);
  assert.equal(fieldFor('prune.ratio'), 'prune.ratio');
  assert.equal(fieldFor('model[3].k'), 'model');
  assert.equal(fieldFor('model.checkpoint'), 'model');
  assert.equal(fieldFor('labels.gpu'), 'labels');
  assert.equal(fieldFor('dataset.path'), 'dataset');
  assert.equal(fieldFor(''), '');
  assert.equal(fieldFor('nonsense'), '');
});

test('metrics are grouped into charts and aligned on one x axis', () => {
  const groups = groupNames(['loss', 'loss/sep', 'train_accuracy', 'val_accuracy', 'lr', 'params', 'flops', 'grad_norm']);
  assert.deepEqual(groups.map((g) => [g.key, g.names]), [
    ['loss', ['loss', 'loss/sep']],
    ['accuracy', ['train_accuracy', 'val_accuracy']],
    ['lr', ['lr']],
    ['params', ['params']],
    ['flops', ['flops']],
    ['m:grad_norm', ['grad_norm']],
  ]);
  const m = readMetrics({
    names: ['a', 'b'],
    series: { a: { iteration: [0, 2, 4], value: [1, null, 3], time: [1, 2, 3] }, b: { iteration: [1, 2], value: [5, 6], time: [1, 2] } },
  });
  assert.deepEqual(m.names, ['a', 'b']);
  assert.deepEqual(m.series.get('a').y, [1, null, 3]);
  assert.deepEqual(alignSeries([{ x: m.series.get('a').x, y: m.series.get('a').y }, { x: m.series.get('b').x, y: m.series.get('b').y }]),
    [[0, 1, 2, 4], [1, null, null, 3], [null, 5, 6, null]]);
  assert.deepEqual(eventPoints({ name: 'loss', iteration: 7, value: 0.5 }), [{ name: 'loss', x: 7, y: 0.5 }]);
  assert.deepEqual(eventPoints({ iteration: 8, metrics: { loss: 0.4, lr: 0.01 } }),
    [{ name: 'loss', x: 8, y: 0.4 }, { name: 'lr', x: 8, y: 0.01 }]);
  assert.deepEqual(eventPoints({ points: [{ name: 'a', iteration: 1, value: 2 }] }), [{ name: 'a', x: 1, y: 2 }]);
  assert.deepEqual(eventPoints({ state: 'running' }), []);
  // gppd's metric events carry the stage; a point's own stage wins
  assert.deepEqual(eventPoints({ job: 'j', stage: 2, attempt: 1, points: [{ name: 'a', iteration: 3, value: 1 }, { name: 'b', iteration: 4, value: 2, stage: 3 }] }),
    [{ name: 'a', x: 3, y: 1, stage: 2 }, { name: 'b', x: 4, y: 2, stage: 3 }]);
  assert.deepEqual(pageOf({ jobs: [1, 2], next_cursor: 'abc' }, 'jobs'), { items: [1, 2], next: 'abc' });
  assert.deepEqual(pageOf({ jobs: [1], next_cursor: null }, 'jobs'), { items: [1], next: '' });
});

test('stages are laid end to end on one step axis; a retried stage keeps its newest points', () => {
  // as gppd returns them: ordered by stage, iteration, attempt; every stage counts from 0
  const m = readMetrics({
    names: ['loss', 'params'],
    series: {
      loss: {
        stage: [0, 0, 0, 1, 1, 1, 1, 3], attempt: [1, 1, 1, 1, 2, 1, 2, 1],
        iteration: [0, 5, 9, 0, 0, 4, 4, 2], value: [3, 2, 1, 9, 8, 7, 6, 5],
      },
      params: { stage: [0, 2], iteration: [9, 6], value: [100, 40] },
    },
  });
  const lay = stageLayout(m.series);
  // stage 0: 0..9, stage 1: 10..14, stage 2 (params only): 15..21, stage 3: 22..24
  assert.deepEqual(lay.spans, [
    { stage: 0, start: 0, end: 9 }, { stage: 1, start: 10, end: 14 },
    { stage: 2, start: 15, end: 21 }, { stage: 3, start: 22, end: 24 },
  ]);
  assert.deepEqual(onSteps(m.series.get('loss'), lay), { x: [0, 5, 9, 10, 14, 24], y: [3, 2, 1, 8, 6, 5] });
  assert.deepEqual(onSteps(m.series.get('params'), lay), { x: [9, 21], y: [100, 40] });
  assert.deepEqual(stepAt(lay, 12), { stage: 1, iteration: 2 });
  assert.deepEqual(stepAt(lay, 22), { stage: 3, iteration: 0 });
  assert.equal(stepAt(lay, 99), null);
  // without stages (an older server) everything is one stage, as before
  const flat = readMetrics({ series: { a: { iteration: [1, 2], value: [5, 6] } } });
  assert.deepEqual(onSteps(flat.series.get('a'), stageLayout(flat.series)), { x: [1, 2], y: [5, 6] });
});

test('a prune stage that needed a recovery says so, one that did not says nothing', () => {
  assert.equal(recoverNote({ recover_epochs: 9, val_before_recover: 0.893, val_accuracy: 0.912 }),
    'below the allowed drop after its fine-tune (validation 89.30 %): 9 more epochs took it to 91.20 %');
  assert.equal(recoverNote({ recover_epochs: 1, val_before_recover: 0.5, val_accuracy: 0.5 }),
    'below the allowed drop after its fine-tune (validation 50.00 %): 1 more epoch took it to 50.00 %');
  assert.equal(recoverNote({ recover_epochs: 2 }), 'below the allowed drop after its fine-tune: 2 more epochs of recovery');
  assert.equal(recoverNote({ val_accuracy: 0.9 }), '');
  assert.equal(recoverNote(null), '');
});

test('a job from an uploaded model names its first stage "Evaluate the model"', () => {
  // the job view (spec embedded) and a list item (model as "checkpoint:SHA", current stage only)
  const full = readJob({ id: 'j1', state: 'running', spec: { dataset: 'd', model: { checkpoint: 'ab' } },
    stages: [{ index: 0, kind: 'train', state: 'running' }, { index: 1, kind: 'push', round: 1, state: 'queued' }] });
  assert.deepEqual(full.stages.map((s) => stageLabel(s)), ['Evaluate the model', 'Push 1']);
  const item = readJob({ id: 'j2', state: 'running', model: 'checkpoint:ab', current_stage: { index: 0, kind: 'train' } });
  assert.equal(stageLabel(item.current), 'Evaluate the model');
  const zoo = readJob({ id: 'j3', state: 'running', model: 'lenet5', current_stage: { index: 0, kind: 'train' },
    stages: [{ index: 0, kind: 'train', state: 'running' }] });
  assert.equal(stageLabel(zoo.current), 'Train');
  assert.equal(stageLabel(zoo.stages[0]), 'Train');
});
