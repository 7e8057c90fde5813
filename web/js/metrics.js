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
  { key: 'params', title: 'Parameters', test: (n) => /param/i.test(n), yLabel: 'params' },
  { key: 'flops', title: 'FLOPs (multiply-adds)', test: (n) => /flop|macs?$/i.test(n), yLabel: 'FLOPs' },
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
  return { x, y, t: s.time || s.times || [], stage: s.stage || s.stages || [] };
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
 * | columnar {series: {...}}.  Returns [{name, x, y}] (maybe empty).
 */
export function eventPoints(data) {
  if (!data || typeof data !== 'object') return [];
  const pts = [];
  const one = (p, it) => {
    if (!p || typeof p !== 'object') return;
    const x = Number(p.iteration ?? p.iter ?? p.step ?? it);
    if (p.name !== undefined && Number.isFinite(x)) {
      pts.push({ name: String(p.name), x, y: p.value === null ? null : Number(p.value) });
    }
  };
  if (Array.isArray(data)) data.forEach((p) => one(p));
  else if (Array.isArray(data.points)) data.points.forEach((p) => one(p, data.iteration));
  else if (data.series && typeof data.series === 'object') {
    const m = readMetrics(data);
    for (const [name, s] of m.series) s.x.forEach((x, i) => pts.push({ name, x, y: s.y[i] }));
  } else if (data.metrics && typeof data.metrics === 'object' && !Array.isArray(data.metrics)) {
    for (const [name, v] of Object.entries(data.metrics)) pts.push({ name, x: Number(data.iteration), y: v === null ? null : Number(v) });
  } else if (Array.isArray(data.metrics)) data.metrics.forEach((p) => one(p, data.iteration));
  else one(data);
  return pts.filter((p) => Number.isFinite(p.x));
}
