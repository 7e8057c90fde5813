// Metric series of a job: fetched downsampled from
// GET /api/v1/jobs/{id}/metrics?max_points=1000 (columnar JSON), grouped
// into charts by name, extended live from SSE metric events.

import { api } from './api.js';

export const MAX_POINTS = 1000;

/** The chart groups, in order; a name goes to the first group that matches. */
const GROUPS = [
  { key: 'loss', title: 'Loss terms', test: (n) => /loss|(^|[/_.])(sep|cov|align|ce|xent)$/i.test(n), yLabel: 'loss' },
  { key: 'accuracy', title: 'Accuracy (train / validation)', test: (n) => /acc/i.test(n), yLabel: 'accuracy', pct: true },
  { key: 'lr', title: 'Learning rate', test: (n) => /(^|[/_.])lr$|learning.?rate/i.test(n), yLabel: 'lr' },
  { key: 'params', title: 'Parameters', test: (n) => /param/i.test(n), yLabel: 'params', stepped: true },
  { key: 'flops', title: 'FLOPs (multiply-adds)', test: (n) => /flop|macs?$/i.test(n), yLabel: 'FLOPs', stepped: true },
];

/** Group metric names into charts: [{key, title, yLabel, names}]. */
export function groupNames(names) {
  const out = GROUPS.map((g) => ({ ...g, names: [] }));
  const other = [];
  for (const n of names) {
    const g = out.find((x) => x.test(n));
    if (g) g.names.push(n);
    else other.push(n);
  }
  const res = out.filter((g) => g.names.length);
  for (const n of other) res.push({ key: 'm:' + n, title: n, yLabel: '', names: [n] });
  return res;
}

/** Read the columnar body into {names, series: Map(name -> {x, y, t, stage})}. */
export function readMetrics(body) {
  const series = new Map();
  const src = (body && body.series) || {};
  const names = Array.isArray(body && body.names) ? body.names.slice() : Object.keys(src);
  if (Array.isArray(src)) {
    // [{name, iteration, value, time}] form
    for (const s of src) series.set(s.name, col(s));
  } else {
    for (const [name, s] of Object.entries(src)) series.set(name, col(s));
  }
  for (const n of series.keys()) if (!names.includes(n)) names.push(n);
  return { names, series };
}

function col(s) {
  const x = (s.iteration || s.iterations || s.x || []).map(Number);
  const y = (s.value || s.values || s.y || []).map((v) => (v === null ? null : Number(v)));
  const st = s.stage || s.stages || [];
  return { x, y, t: s.time || s.times || [], stage: x.map((_, i) => (st[i] === undefined || st[i] === null ? 0 : Number(st[i]))) };
}

/** The stage of point i (col() and the live path store numbers; none: 0). */
function stageAt(s, i) {
  return (s.stage && s.stage[i]) || 0;
}

/**
 * Each stage counts its iterations from the start, so the stages are laid
 * end to end on one step axis: a stage's first step comes right after the
 * largest iteration of the stage before it (over every series).
 * series: Map(name -> {x: iterations, stage: stage indexes}).
 * Returns {offset: Map(stage -> its first step), spans: [{stage, start, end}]}.
 */
export function stageLayout(series) {
  const last = new Map();
  for (const s of series.values()) {
    for (let i = 0; i < s.x.length; i++) {
      const it = s.x[i];
      if (!Number.isFinite(it)) continue;
      const st = stageAt(s, i);
      if (!last.has(st) || it > last.get(st)) last.set(st, it);
    }
  }
  const offset = new Map();
  const spans = [];
  let at = 0;
  for (const st of [...last.keys()].sort((a, b) => a - b)) {
    offset.set(st, at);
    const end = at + Math.max(0, last.get(st));
    spans.push({ stage: st, start: at, end });
    at = end + 1;
  }
  return { offset, spans };
}

/**
 * One series on the step axis of `layout`: x = the stage's first step +
 * iteration, ascending.  A point seen twice (a retried stage's attempts)
 * keeps the later value: the server orders by stage, iteration, attempt and
 * live points arrive in order.
 */
export function onSteps(s, layout) {
  const at = new Map();
  for (let i = 0; i < s.x.length; i++) {
    const off = layout.offset.get(stageAt(s, i));
    if (off === undefined || !Number.isFinite(s.x[i])) continue;
    at.set(off + s.x[i], s.y[i]);
  }
  const x = [...at.keys()].sort((a, b) => a - b);
  return { x, y: x.map((v) => at.get(v)) };
}

/** Where a step falls: {stage, iteration}, or null outside every stage. */
export function stepAt(layout, x) {
  for (const sp of layout.spans) {
    if (x >= sp.start && x <= sp.end) return { stage: sp.stage, iteration: x - sp.start };
  }
  return null;
}

/** Fetch a job's metrics (names: optional list). */
export async function fetchMetrics(jobId, names, signal) {
  const query = { max_points: MAX_POINTS };
  if (names && names.length) query.name = names.join(',');
  const body = await api(`/jobs/${encodeURIComponent(jobId)}/metrics`, { query, signal });
  return readMetrics(body);
}

/**
 * Points carried by an SSE metric event, whatever its exact form:
 * {name, iteration, value} | {points: [...]} | {metrics: {name: value}, iteration}
 * | columnar {series: {...}}.  Returns [{name, x, y, stage?}] (maybe empty);
 * stage is the point's own or the event's (gppd's metric events carry it).
 */
export function eventPoints(data) {
  if (!data || typeof data !== 'object') return [];
  const pts = [];
  // the stage a point belongs to: its own, else the event's
  const stageOf = (p) => {
    const v = Number(p && p.stage !== undefined && p.stage !== null ? p.stage : data.stage);
    return Number.isFinite(v) ? { stage: v } : {};
  };
  const one = (p, it) => {
    if (!p || typeof p !== 'object') return;
    const x = Number(p.iteration ?? p.iter ?? p.step ?? it);
    if (p.name !== undefined && Number.isFinite(x)) {
      pts.push({ name: String(p.name), x, y: p.value === null ? null : Number(p.value), ...stageOf(p) });
    }
  };
  if (Array.isArray(data)) data.forEach((p) => one(p));
  else if (Array.isArray(data.points)) data.points.forEach((p) => one(p, data.iteration));
  else if (data.series && typeof data.series === 'object') {
    const m = readMetrics(data);
    for (const [name, s] of m.series) {
      s.x.forEach((x, i) => pts.push({ name, x, y: s.y[i], ...stageOf({ stage: s.stage[i] }) }));
    }
  } else if (data.metrics && typeof data.metrics === 'object' && !Array.isArray(data.metrics)) {
    for (const [name, v] of Object.entries(data.metrics)) {
      pts.push({ name, x: Number(data.iteration), y: v === null ? null : Number(v), ...stageOf(null) });
    }
  } else if (Array.isArray(data.metrics)) data.metrics.forEach((p) => one(p, data.iteration));
  else one(data);
  return pts.filter((p) => Number.isFinite(p.x));
}
