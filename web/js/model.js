// Reading the API's job, stage and worker objects into what the views show.
// One place that knows the field names, so the views stay simple.

import { h, fmtCount, fmtPct } from './dom.js';

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const STAGE_DONE = new Set(['succeeded', 'skipped']);

export function isFinished(state) {
  return FINISHED.has(state);
}

/** Text of a dataset / model field, which may be a name or an object. */
export function refText(v) {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return `inline network (${v.length} layers)`;
  if (typeof v === 'object') {
    if (v.checkpoint) return `checkpoint ${v.checkpoint}`;
    if (v.path) return `${v.format || 'files'}: ${v.path}`;
    if (v.layers) return `inline network (${v.layers.length} layers)`;
  }
  return JSON.stringify(v);
}

/** The human label of a stage: "Train", "Grow 2", "Push 1", "Prune 3". */
export function stageLabel(st, total) {
  if (!st) return '–';
  if (!st.kind) return total ? `stage ${st.idx + 1} of ${total}` : `stage ${st.idx + 1}`;
  const kind = String(st.kind || 'stage');
  if (kind === 'finetune') return 'Final recovery';
  if (st.evaluates) return 'Evaluate the model';
  const name = kind.charAt(0).toUpperCase() + kind.slice(1);
  return st.round ? `${name} ${st.round}` : name;
}

const REASONS = {
  waiting_for_worker: 'waiting for a worker',
  waiting_for_gpu: 'waiting for a GPU worker',
  waiting_for_cpu: 'waiting for a CPU worker',
  waiting_for_labels: 'waiting for a worker with the required labels',
  waiting_for_previous: 'waiting for the previous stage',
  waiting_for_stage: 'waiting for the previous stage',
  waiting_for_previous_stage: 'waiting for the previous stage',
  retry_backoff: 'waiting to retry (back-off)',
  worker_lost: 'its worker was lost; waiting to run again',
  draining: 'its worker is draining',
};

/**
 * What a prune stage's recovery did (stop.recover_epochs), in words, or ''
 * when it had none: its fine-tune left it below the stop rule's bound, and
 * it trained more epochs before the rule judged it.
 */
export function recoverNote(summary) {
  const n = summary && Number(summary.recover_epochs);
  if (!Number.isFinite(n) || n <= 0) return '';
  const before = Number(summary.val_before_recover);
  const after = Number(summary.val_accuracy);
  const epochs = `${n} more epoch${n === 1 ? '' : 's'}`;
  if (!Number.isFinite(before) || !Number.isFinite(after)) return `below the allowed drop after its fine-tune: ${epochs} of recovery`;
  return `below the allowed drop after its fine-tune (validation ${fmtPct(before)}): ${epochs} took it to ${fmtPct(after)}`;
}

/** A stage / job reason code in words (unknown codes shown as they are). */
export function reasonText(r) {
  if (!r) return '';
  return REASONS[r] || String(r).replace(/_/g, ' ');
}

function num(...xs) {
  for (const x of xs) if (x !== undefined && x !== null && Number.isFinite(Number(x))) return Number(x);
  return null;
}

/** Normalise one stage object. */
export function readStage(s, i) {
  return {
    idx: num(s.idx, s.index, i),
    kind: s.kind || s.type || 'stage',
    round: num(s.round, s.iteration) || 0,
    state: s.state || 'queued',
    attempt: num(s.attempt, s.attempts) || 0,
    reason: s.reason || '',
    worker: s.worker_id || s.worker || '',
    progress: num(s.progress) ?? (STAGE_DONE.has(s.state) ? 1 : 0),
    started_at: s.started_at || null,
    finished_at: s.finished_at || null,
    summary: typeof s.summary === 'string' ? safeJson(s.summary) : s.summary || null,
  };
}

function safeJson(t) {
  try {
    return JSON.parse(t);
  } catch {
    return null;
  }
}

/** Normalise a job object (list item or full job). */
export function readJob(j) {
  const stages = Array.isArray(j.stages) ? j.stages.map(readStage) : [];
  const total = num(j.stages_total, j.stage_count, stages.length) || 0;
  const done = num(j.stages_done, stages.filter((s) => STAGE_DONE.has(s.state)).length) || 0;
  let current = null;
  if (j.current_stage && typeof j.current_stage === 'object') current = readStage(j.current_stage, 0);
  else if (typeof j.current_stage === 'number') {
    // A list item names the current stage by index only.
    current = stages.find((s) => s.idx === j.current_stage) ||
      { idx: j.current_stage, kind: '', round: 0, state: '', attempt: 0, reason: '', worker: '', progress: 0 };
  }
  if (!current && stages.length) current = stages.find((s) => !STAGE_DONE.has(s.state)) || null;
  let progress = num(j.progress);
  if (progress === null) {
    progress = total ? (done + (current && !isFinished(j.state) ? current.progress : 0)) / total : 0;
  }
  if (j.state === 'succeeded') progress = 1;
  const spec = typeof j.spec === 'string' ? safeJson(j.spec) : j.spec || null;
  const summary = typeof j.summary === 'string' ? safeJson(j.summary) : j.summary || null;
  // A job from a trained checkpoint: its train stage only evaluates the model.
  // (a list item has no spec: its model reads "checkpoint:SHA")
  const given = !!(spec && spec.model && typeof spec.model === 'object' && !Array.isArray(spec.model) &&
    spec.model.checkpoint) || (typeof j.model === 'string' && j.model.startsWith('checkpoint:'));
  for (const s of stages.concat(current ? [current] : [])) {
    if (s.kind === 'train' && (given || (s.summary && s.summary.evaluated_only))) s.evaluates = true;
  }
  return {
    raw: j,
    id: j.id,
    name: j.name || (spec && spec.name) || j.id,
    state: j.state || 'queued',
    reason: j.reason || '',
    owner: j.owner || '',
    dataset: j.dataset ?? (spec && spec.dataset),
    model: j.model ?? (spec && spec.model),
    device: j.device || (spec && spec.device) || '',
    priority: num(j.priority, spec && spec.priority) ?? 0,
    created_at: j.created_at,
    started_at: j.started_at,
    finished_at: j.finished_at,
    spec,
    stages,
    total,
    done,
    current,
    progress: Math.max(0, Math.min(1, progress || 0)),
    summary,
  };
}

/** baseline / current {params, flops, val_accuracy, test_accuracy} from a summary. */
export function summaryPair(summary) {
  if (!summary || typeof summary !== 'object') return { baseline: null, current: null };
  const baseline = summary.baseline || null;
  const current =
    summary.current || summary.latest || summary.accuracy_first ||
    (Array.isArray(summary.stages) && summary.stages.length ? summary.stages[summary.stages.length - 1] : null);
  return { baseline, current };
}

export function accuracyOf(m) {
  if (!m) return null;
  return num(m.val_accuracy, m.accuracy, m.test_accuracy);
}

/** "61.7 k → 12.3 k" style text for a pair of numbers. */
export function arrowText(a, b, fmt) {
  if (a === null && b === null) return '–';
  if (b === null || b === undefined || a === b) return fmt(a);
  return `${fmt(a)} → ${fmt(b)}`;
}

export function paramsText(summary) {
  const { baseline, current } = summaryPair(summary);
  return arrowText(baseline ? num(baseline.params) : null, current ? num(current.params) : null, fmtCount);
}

export function accuracyText(summary) {
  const { baseline, current } = summaryPair(summary);
  return arrowText(accuracyOf(baseline), accuracyOf(current), (x) => fmtPct(x, 1));
}

/** A state badge element. */
export function badge(state, extraLabel) {
  return h(`span.badge.badge-${String(state).replace(/[^a-z]/g, '')}`, { 'data-state': state }, extraLabel || state);
}

/** A progress bar (native <progress> with a visible percentage). */
export function progressBar(fraction, label) {
  const pct = Math.round((fraction || 0) * 100);
  return h('span.progress', [
    h('progress', { max: 100, value: pct, 'aria-label': label || 'Progress' }),
    h('span.progress-text', `${pct} %`),
  ]);
}

/** Read a worker object from GET /api/v1/workers. */
export function readWorker(w) {
  let devices = w.devices ?? w.device ?? [];
  if (typeof devices === 'string') {
    devices = safeJson(devices) ?? devices;
  }
  let labels = w.labels ?? {};
  if (typeof labels === 'string') labels = safeJson(labels) ?? {};
  const stage = w.stage || w.current_stage || null;
  const lastSeen = w.last_seen ?? w.heartbeat_at ?? w.last_heartbeat ?? null;
  const ageS = num(w.heartbeat_age_s, w.heartbeat_age);
  return {
    id: w.id,
    name: w.name || w.id,
    host: w.host || '',
    devices: Array.isArray(devices) ? devices.map((d) => (typeof d === 'string' ? d : d.name || d.kind || JSON.stringify(d))) : [String(devices)],
    threads: num(w.threads),
    labels,
    state: w.state || 'idle',
    stage,
    lastSeen,
    ageS,
    fetchedAt: Date.now(),
  };
}
