// One job: header and actions (cancel, retry, downloads), the before/after
// summary, the stage timeline, live metric charts, the accuracy-versus-size
// plot, per-layer widths, the log tail and the stored spec.
//
// Live: one Server-Sent Events stream (GET /api/v1/jobs/{id}/events, read
// with fetch so the token travels in the header, resumed with
// Last-Event-ID).  Where the stream is unavailable the page polls.

import { api, download, ApiError } from '../api.js';
import { openEvents } from '../sse.js';
import {
  h, replace, announce, fmtCount, fmtPct, fmtTime, fmtDuration, toDate, setBusy,
} from '../dom.js';
import {
  readJob, refText, stageLabel, reasonText, recoverNote, badge, progressBar, isFinished, summaryPair, accuracyOf,
} from '../model.js';
import { lineChart, widthBars, PALETTE } from '../charts.js';
import {
  fetchMetrics, groupNames, eventPoints, stageLayout, onSteps, stepAt, MAX_POINTS,
} from '../metrics.js';

export const NAME = 'job';
const POLL_MS = 3000;
const LOG_KEEP = 500;

export async function render(main, route, ctx) {
  const id = route.id;
  const enc = encodeURIComponent(id);
  document.title = `Job ${id} · gppd`;
  let alive = true;
  let job = null;
  let stream = null;
  const timers = [];
  const charts = new Map(); // group key -> {chart, group}
  let metricState = { names: [], series: new Map() };
  let logLastId = 0;
  const logIds = new Set();

  // ---------- skeleton (fixed order, so nothing jumps as parts load) ----------
  const title = h('h1', { tabindex: '-1' }, id);
  const stateSlot = h('span.state-slot');
  const live = h('span.live', { 'data-live': 'connecting' }, 'connecting…');
  const meta = h('dl.meta');
  const actionError = h('p.notice.notice-error#job-action-error', { role: 'alert', hidden: true });
  const cancelBtn = h('button.btn.btn-danger#job-cancel', { type: 'button', disabled: true }, 'Cancel job');
  const retryBtn = h('button.btn#job-retry', { type: 'button', disabled: true }, 'Retry');
  const dlGppm = h('button.btn#job-download-gppm', { type: 'button', disabled: true }, 'Download .gppm');
  const dlOnnx = h('button.btn#job-download-onnx', { type: 'button', disabled: true }, 'Download ONNX');
  const dlCsv = h('button.btn.btn-small#job-download-csv', { type: 'button', disabled: true, title: 'No metric points yet.' },
    'Download metrics (CSV)');
  const cards = h('div.cards');
  const timelineStrip = h('div.timeline-strip', { 'aria-hidden': 'true' });
  const timeline = h('ol.timeline', { 'aria-label': 'Stages in order' });
  const chartsBox = h('div.charts');
  const chartsNote = h('p.empty', 'No metric points yet: they appear while a stage runs.');
  const chartsError = h('p.notice.notice-error', { role: 'alert', hidden: true });
  const avsBox = h('div.avs');
  const cutBox = h('div.cuts', { hidden: true });
  const widthsBox = h('div.widths');
  const widthsPick = h('select#widths-stage', { disabled: true });
  const logList = h('ol.log-lines');
  // A scrollable region (focusable so the keyboard can scroll it).
  const logBox = h('div.log', { role: 'log', 'aria-live': 'off', 'aria-label': 'Log lines', tabindex: '0', hidden: true }, logList);
  const logNote = h('p.empty', 'No log lines yet.');
  const specPre = h('pre.spec');

  const section = (sid, heading, ...body) =>
    h('section.panel', { 'aria-labelledby': sid }, h('h2', { id: sid }, heading), ...body);

  replace(main,
    h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/jobs' }, 'Jobs'), h('span', { 'aria-hidden': 'true' }, ' / '), h('span', { 'aria-current': 'page' }, id)),
    h('div.page-head',
      h('div.title-block', title, h('div.title-sub', stateSlot, live)),
      h('div.page-actions', cancelBtn, retryBtn, dlGppm, dlOnnx)),
    actionError,
    meta,
    cards,
    section('sec-stages', 'Stages', timelineStrip, timeline),
    h('section.panel', { 'aria-labelledby': 'sec-metrics' },
      h('div.section-head', h('h2', { id: 'sec-metrics' }, 'Metrics'), dlCsv),
      chartsError, chartsNote, chartsBox),
    section('sec-avs', 'Accuracy versus size', avsBox, cutBox),
    section('sec-widths', 'Per-layer widths',
      h('div.field.field-inline', h('label', { for: 'widths-stage' }, 'Compare the baseline with'), widthsPick),
      widthsBox),
    section('sec-logs', 'Log', logNote, logBox),
    section('sec-spec', 'Job spec', h('details', h('summary', 'The spec as stored, defaults filled'), specPre)));

  // ---------- job ----------
  async function loadJob() {
    const raw = await api(`/jobs/${enc}`);
    if (!alive) return;
    job = readJob(raw);
    drawJob();
  }

  function drawJob() {
    const j = job;
    document.title = `${j.name} · gppd`;
    title.textContent = j.name;
    replace(stateSlot, badge(j.state), ' ', h('code.job-id', j.id));
    const row = (k, v) => h('div', h('dt', k), h('dd', v));
    replace(meta,
      row('Owner', j.owner || '–'),
      row('Data set', refText(j.dataset)),
      row('Model', refText(j.model)),
      row('Device', j.device || 'any'),
      row('Priority', String(j.priority)),
      row('Created', fmtTime(j.created_at)),
      row('Started', fmtTime(j.started_at)),
      row('Finished', fmtTime(j.finished_at)),
      j.reason ? row('Reason', j.reason) : null);
    cancelBtn.disabled = isFinished(j.state);
    retryBtn.disabled = !(j.state === 'failed' || j.state === 'cancelled');
    const hasModel = j.done > 0 || j.state === 'succeeded';
    dlGppm.disabled = !hasModel;
    dlOnnx.disabled = !hasModel;
    const why = hasModel ? '' : 'No checkpoint yet: the first stage has not finished.';
    dlGppm.title = why;
    dlOnnx.title = why;
    drawCards();
    drawTimeline();
    if (j.spec) specPre.textContent = JSON.stringify(j.spec, null, 2);
    drawAvs();
  }

  function drawCards() {
    const { baseline, current } = summaryPair(job.summary);
    const card = (label, a, b, fmt, better) => {
      let delta = '';
      if (a !== null && b !== null && a !== undefined && b !== undefined && a !== 0) {
        const r = b / a;
        delta = better === 'down' ? `${(r * 100).toFixed(1)} % of baseline` : `${b >= a ? '+' : ''}${((b - a) * 100).toFixed(2)} pt`;
      }
      return h('div.card',
        h('p.card-label', label),
        h('p.card-value', b !== null && b !== undefined ? fmt(b) : a !== null && a !== undefined ? fmt(a) : '–'),
        h('p.card-sub', a !== null && a !== undefined ? `baseline ${fmt(a)}` : 'baseline not measured yet', delta ? ` · ${delta}` : ''));
    };
    const n = (m, k) => (m && m[k] !== undefined && m[k] !== null ? Number(m[k]) : null);
    replace(cards,
      h('div.card',
        h('p.card-label', 'Progress'),
        h('p.card-value', `${Math.round(job.progress * 100)} %`),
        progressBar(job.progress, 'Job progress'),
        h('p.card-sub', `${job.done} of ${job.total} stages done`)),
      card('Parameters', n(baseline, 'params'), n(current, 'params'), fmtCount, 'down'),
      card('FLOPs', n(baseline, 'flops'), n(current, 'flops'), fmtCount, 'down'),
      card('Validation accuracy', n(baseline, 'val_accuracy'), n(current, 'val_accuracy'), (x) => fmtPct(x)),
      card('Test accuracy', n(baseline, 'test_accuracy'), n(current, 'test_accuracy'), (x) => fmtPct(x)));
  }

  function drawTimeline() {
    const stages = job.stages;
    replace(timelineStrip, stages.map((s) =>
      h(`span.seg.seg-${s.state}`, { title: `${stageLabel(s)}: ${s.state}` })));
    if (!stages.length) {
      replace(timeline, h('li.empty', 'This job has no stages.'));
      return;
    }
    const firstOpen = stages.find((s) => s.state !== 'succeeded' && s.state !== 'skipped');
    replace(timeline, stages.map((s) => {
      const started = toDate(s.started_at);
      const finished = toDate(s.finished_at);
      const dur = started ? ((finished || new Date()) - started) / 1000 : null;
      let note = '';
      if (s.reason) note = reasonText(s.reason);
      else if (s.state === 'queued' && firstOpen && s.idx > firstOpen.idx) note = 'planned: runs after the stage before it';
      else if (s.kind === 'prune') note = recoverNote(s.summary);
      return h(`li.stage.stage-${s.state}`, { 'data-kind': s.kind, 'data-idx': String(s.idx), 'data-state': s.state },
        h('span.stage-dot', { 'aria-hidden': 'true' }),
        h('div.stage-body',
          h('div.stage-head',
            h('span.stage-name', `${s.idx + 1}. ${stageLabel(s)}`),
            badge(s.state),
            s.attempt > 1 ? h('span.sub', `attempt ${s.attempt}`) : null,
            dur !== null ? h('span.sub', fmtDuration(dur)) : null),
          s.state === 'running' || s.state === 'assigned' ? progressBar(s.progress, `Progress of ${stageLabel(s)}`) : null,
          note ? h('p.stage-reason', note) : null,
          s.worker ? h('p.sub', 'worker ', h('code', s.worker)) : null));
    }));
  }

  // ---------- actions ----------
  function showActionError(e) {
    actionError.hidden = false;
    actionError.textContent = e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code}, HTTP ${e.status})` : ''}` : String(e.message || e);
  }
  async function act(button, verb, done) {
    actionError.hidden = true;
    setBusy(button, true);
    try {
      await api(`/jobs/${enc}/${verb}`, { method: 'POST' });
      announce(done, 'ok');
      await loadJob();
    } catch (e) {
      showActionError(e);
      announce(`Could not ${verb}: ${e.message}`, 'error');
    } finally {
      setBusy(button, false);
      if (job) drawJob();
    }
  }
  cancelBtn.addEventListener('click', () => act(cancelBtn, 'cancel', 'Cancel requested.'));
  retryBtn.addEventListener('click', async () => {
    await act(retryBtn, 'retry', 'Job queued again from its last good stage.');
    // The stream stopped when the job finished: follow the retried job live.
    if (alive && job && !isFinished(job.state) && live.dataset.live === 'ended') startStream();
  });
  const dl = (button, format, what = 'model') => async () => {
    actionError.hidden = true;
    setBusy(button, true);
    try {
      const f = await download(`/jobs/${enc}/${what}`, { format }, `${id}${what === 'model' ? '' : `-${what}`}.${format}`);
      announce(`Downloaded ${f.name} (${fmtCount(f.size)} bytes).`, 'ok');
    } catch (e) {
      showActionError(e);
    } finally {
      setBusy(button, false);
      if (job) drawJob();
    }
  };
  dlGppm.addEventListener('click', dl(dlGppm, 'gppm'));
  dlOnnx.addEventListener('click', dl(dlOnnx, 'onnx'));
  // every point, not the downsampled ones the charts draw (CSV: max_points 0)
  dlCsv.addEventListener('click', dl(dlCsv, 'csv', 'metrics'));

  // ---------- metrics ----------
  let metricsPending = 0;
  let metricsLast = 0;
  async function loadMetrics() {
    metricsLast = Date.now();
    try {
      metricState = await fetchMetrics(id);
      chartsError.hidden = true;
    } catch (e) {
      if (e.status === 401) return;
      chartsError.hidden = false;
      chartsError.textContent = e.status === 404 ? 'Metrics are not available for this job (yet).' : `Could not load metrics: ${e.message}`;
      return;
    }
    if (alive) drawCharts();
  }
  /**
   * Refetch the downsampled series at most every few seconds; a sooner
   * request (a stage finished) moves a later pending one forward.
   */
  let metricsDue = 0;
  function scheduleMetrics(ms = 2000) {
    const due = Math.max(Date.now(), metricsLast + ms);
    if (metricsPending) {
      if (due >= metricsDue) return;
      clearTimeout(metricsPending);
    }
    metricsDue = due;
    metricsPending = setTimeout(async () => {
      metricsPending = 0;
      await loadMetrics();
    }, due - Date.now());
  }

  let layout = { offset: new Map(), spans: [] };
  const stageName = (idx) => {
    const st = job && job.stages.find((x) => x.idx === idx);
    return st ? stageLabel(st) : `stage ${idx + 1}`;
  };
  /** A step as the legend shows it: the stage and its own iteration. */
  const stepText = (x) => {
    const at = stepAt(layout, x);
    return at ? `${stageName(at.stage)} · ${at.iteration}` : String(x);
  };
  /** Where each stage starts on the step axis, with its name. */
  const stageMarks = () => layout.spans.map((sp) => ({ x: sp.start, label: stageName(sp.stage) }));

  let drawQueued = false;
  function drawCharts() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      if (!alive) return;
      const groups = groupNames(metricState.names.filter((n) => metricState.series.has(n)));
      chartsNote.hidden = groups.length > 0;
      dlCsv.disabled = groups.length === 0;
      dlCsv.title = groups.length ? 'Every point of every series, one row each' : 'No metric points yet.';
      // Every stage counts its iterations from 0: the charts lay them end to end.
      layout = stageLayout(metricState.series);
      const keep = new Set(groups.map((g) => g.key));
      for (const [k, c] of charts) {
        if (!keep.has(k)) {
          c.chart.destroy();
          c.chart.figure.remove();
          charts.delete(k);
        }
      }
      for (const g of groups) {
        const list = g.names.map((n) => {
          const s = onSteps(metricState.series.get(n), layout);
          return { label: n, x: s.x, y: s.y };
        });
        let c = charts.get(g.key);
        if (!c) {
          const chart = lineChart(chartsBox, {
            title: g.title,
            xLabel: 'step (stages end to end)',
            xLegend: 'stage · iteration',
            xValue: stepText,
            marks: stageMarks,
            stepped: g.stepped,
            yLabel: g.yLabel,
            yFormat: g.pct ? (v) => (v === null ? '' : `${+(v * 100).toFixed(1)}%`) : undefined,
            series: list,
          });
          c = { chart, group: g };
          charts.set(g.key, c);
        } else {
          c.chart.update(list);
        }
      }
      // Keep the charts in group order.
      for (const g of groups) chartsBox.append(charts.get(g.key).chart.figure);
    });
  }

  function addPoints(points) {
    let unknown = false;
    for (const p of points) {
      let s = metricState.series.get(p.name);
      if (!s) {
        s = { x: [], y: [], t: [], stage: [] };
        metricState.series.set(p.name, s);
        metricState.names.push(p.name);
        metricState.names.sort();
      }
      // in order: a later stage, or a later iteration of the same stage
      const n = s.x.length;
      const st = p.stage ?? 0;
      const lastStage = n ? s.stage[n - 1] : -Infinity;
      const last = n ? s.x[n - 1] : -Infinity;
      if (st > lastStage || (st === lastStage && p.x > last)) {
        s.x.push(p.x);
        s.y.push(p.y);
        s.stage.push(st);
      } else if (st < lastStage || p.x < last) {
        unknown = true; // out of order (stages interleaved, or a retried stage): refetch
      }
      if (s.x.length > MAX_POINTS * 2) unknown = true; // let the server downsample again
    }
    drawCharts();
    if (unknown) scheduleMetrics();
    else scheduleMetrics(15000);
  }

  // ---------- accuracy versus size ----------
  let archState = null;
  let avsChart = null;
  /**
   * One point per prune step (from each prune stage's summary), the
   * baseline, and the two models the method reports: accuracy-first (best
   * validation accuracy) and size-first (smallest within the allowed drop).
   * The job summary's accuracy_first / size_first win when the daemon gives
   * them; otherwise they are picked here by the same rule (METHOD.md §5).
   */
  function avsPoints() {
    const pts = [];
    const sum = job && job.summary;
    const baseline = (sum && sum.baseline) || (archState && archState.baseline) || null;
    const baseAcc = accuracyOf(baseline);
    if (baseline && baseline.params && baseAcc !== null) {
      pts.push({ label: 'baseline', params: Number(baseline.params), acc: baseAcc, kind: 'baseline' });
    }
    const steps = [];
    for (const s of job ? job.stages : []) {
      if (s.kind !== 'prune' || !s.summary) continue;
      const acc = accuracyOf(s.summary);
      if (!s.summary.params || acc === null) continue;
      steps.push({ label: `prune ${s.round || steps.length + 1}`, params: Number(s.summary.params), acc, kind: 'prune' });
    }
    pts.push(...steps);
    const given = (m) => (m && m.params && accuracyOf(m) !== null ? { params: Number(m.params), acc: accuracyOf(m) } : null);
    let accFirst = sum && given(sum.accuracy_first);
    let sizeFirst = sum && given(sum.size_first);
    let computed = false;
    if (steps.length && (!accFirst || !sizeFirst)) {
      computed = true;
      if (!accFirst) accFirst = steps.reduce((a, b) => (b.acc > a.acc ? b : a));
      if (!sizeFirst && baseAcc !== null) {
        const drop = job.spec && job.spec.stop && Number.isFinite(job.spec.stop.max_accuracy_drop)
          ? job.spec.stop.max_accuracy_drop : 0.01;
        const ok = steps.filter((p) => p.acc >= baseAcc - drop - 1e-12);
        if (ok.length) sizeFirst = ok.reduce((a, b) => (b.params < a.params ? b : a));
      }
    }
    if (accFirst) pts.push({ label: 'accuracy-first', params: accFirst.params, acc: accFirst.acc, kind: 'accuracy_first' });
    if (sizeFirst) pts.push({ label: 'size-first', params: sizeFirst.params, acc: sizeFirst.acc, kind: 'size_first' });
    pts.computed = computed;
    return pts;
  }
  /**
   * What GPP's channel choice is worth (prune.compare_cut): each prune
   * stage records the test accuracy of its own cut and of the same net cut
   * to the same widths by filter L1 norm and at random, before any
   * fine-tuning.
   */
  function drawCuts() {
    const rows = [];
    for (const s of job ? job.stages : []) {
      const c = s.kind === 'prune' && s.summary && s.summary.cut_compare;
      if (!c || !Number.isFinite(c.gpp_test)) continue;
      const vs = (x) => {
        const d = 100 * (c.gpp_test - x);
        return `${fmtPct(x)} (GPP ${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)})`;
      };
      rows.push(h('tr',
        h('th', { scope: 'row' }, `prune ${s.round || rows.length + 1}`),
        h('td.num', fmtCount(s.summary.params)),
        h('td.num', fmtPct(c.gpp_test)),
        h('td.num', vs(c.l1_test)),
        h('td.num', vs(c.random_test))));
    }
    cutBox.hidden = !rows.length;
    if (!rows.length) return;
    replace(cutBox,
      h('h3', 'Right after each cut, before fine-tuning'),
      h('p.sub', 'Test accuracy of the same net cut to the same widths by GPP\'s choice, by filter L1 norm and at random (mean of 3 draws). Fine-tuning then narrows the gap, usually to nothing.'),
      h('table.data.cut-table',
        h('thead', h('tr', h('th', { scope: 'col' }, 'Step'), h('th.num', { scope: 'col' }, 'Params after'),
          h('th.num', { scope: 'col' }, 'GPP'), h('th.num', { scope: 'col' }, 'L1 norm'), h('th.num', { scope: 'col' }, 'Random'))),
        h('tbody', rows)));
  }
  function drawAvs() {
    drawCuts();
    const pts = avsPoints();
    const steps = pts.filter((p) => p.kind === 'prune');
    if (!steps.length) {
      if (avsChart) {
        avsChart.destroy();
        avsChart = null;
      }
      replace(avsBox, h('p.empty', 'No prune steps measured yet: one point per prune step appears here, with the accuracy-first and size-first models marked.'));
      return;
    }
    // Marks that stay readable when they coincide: the chosen models are
    // rings of different sizes around the step's dot.
    const ser = (kind, label, color, size, ring) => {
      const p = pts.filter((q) => q.kind === kind);
      return {
        label, x: p.map((q) => q.params), y: p.map((q) => q.acc), color, points: true, noLine: true,
        pointSize: size, pointWidth: ring ? 2.5 : 1, fill: ring ? 'rgba(0,0,0,0)' : color,
      };
    };
    const list = [
      ser('baseline', 'baseline', '#6b6b6b', 9),
      ser('prune', 'prune steps', PALETTE[0], 8),
      ser('accuracy_first', 'accuracy-first', PALETTE[2], 22, true),
      ser('size_first', 'size-first', PALETTE[1], 15, true),
    ].filter((s) => s.x.length);
    if (!avsChart || !avsBox.contains(avsChart.figure)) {
      avsBox.replaceChildren();
      avsChart = lineChart(avsBox, {
        title: 'Validation accuracy against parameters (one point per prune step)',
        xLabel: 'params',
        yLabel: 'accuracy',
        pad: true,
        yFormat: (v) => (v === null ? '' : `${+(v * 100).toFixed(1)}%`),
        series: list,
      });
      const table = h('table.data.avs-table');
      avsBox.append(h('details.avs-details', h('summary', 'The points as a table'), table));
    } else {
      avsChart.update(list);
    }
    const table = avsBox.querySelector('.avs-table');
    replace(table,
      h('thead', h('tr', h('th', { scope: 'col' }, 'Point'), h('th.num', { scope: 'col' }, 'Params'), h('th.num', { scope: 'col' }, 'Accuracy'))),
      h('tbody', pts.map((p) => h('tr', h('th', { scope: 'row' }, p.label), h('td.num', fmtCount(p.params)), h('td.num', fmtPct(p.acc))))));
  }

  // ---------- architecture (per-layer widths) ----------
  function layersOf(m) {
    const ls = (m && (m.layers || m.widths)) || [];
    return Array.isArray(ls) ? ls : [];
  }
  function drawWidths() {
    const a = archState;
    const base = a && (a.baseline || (Array.isArray(a.stages) && a.stages[0]));
    const outs = (a && Array.isArray(a.stages) ? a.stages : []).filter((s) => layersOf(s).length);
    if (!base || !layersOf(base).length || !outs.length) {
      widthsPick.disabled = true;
      replace(widthsPick, h('option', 'no stage output yet'));
      replace(widthsBox, h('p.empty', 'No widths yet: they appear when the baseline is trained and again after each stage.'));
      return;
    }
    // Follow the newest stage output until the reader picks one.
    const prev = widthsPicked ? widthsPick.value : '';
    replace(widthsPick, outs.map((s, i) => {
      const label = `${stageLabel({ kind: s.kind, round: s.round })} output${s.params ? ` (${fmtCount(s.params)} params)` : ''}`;
      return h('option', { value: String(i) }, label);
    }));
    widthsPick.disabled = false;
    widthsPick.value = prev && Number(prev) < outs.length ? prev : String(outs.length - 1);
    const after = outs[Number(widthsPick.value)];
    const byName = new Map(layersOf(after).map((l) => [l.name, l]));
    const layers = layersOf(base)
      .filter((l) => l.width !== undefined && l.width !== null)
      .map((l) => ({ name: l.name, kind: l.kind, before: Number(l.width), after: byName.has(l.name) ? Number(byName.get(l.name).width) : null }));
    widthBars(widthsBox, layers, { beforeLabel: 'baseline', afterLabel: stageLabel({ kind: after.kind, round: after.round }) });
  }
  let widthsPicked = false;
  widthsPick.addEventListener('change', () => {
    widthsPicked = true;
    drawWidths();
  });
  async function loadArch() {
    try {
      archState = await api(`/jobs/${enc}/architecture`);
    } catch (e) {
      if (e.status === 401) return;
      archState = null;
      if (e.status !== 404) replace(widthsBox, h('p.notice.notice-error', `Could not load the architecture: ${e.message}`));
      else drawWidths();
      return;
    }
    if (!alive) return;
    drawWidths();
    if (job) drawAvs();
  }

  // ---------- logs ----------
  function logLine(l) {
    const t = toDate(l.time);
    return h(`li.log-line.log-${l.level || 'info'}`,
      h('time', { datetime: t ? t.toISOString() : '' }, t ? t.toLocaleTimeString() : ''),
      h('span.log-level', l.level || 'info'),
      h('span.log-source', l.source || ''),
      h('span.log-msg', l.message ?? l.msg ?? l.text ?? ''));
  }
  function addLogs(lines) {
    const atBottom = logBox.hidden || logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 8;
    let added = 0;
    for (const l of lines) {
      const lid = Number(l.id);
      if (Number.isFinite(lid)) {
        if (logIds.has(lid)) continue;
        logIds.add(lid);
        if (lid > logLastId) logLastId = lid;
      }
      logList.append(logLine(l));
      added++;
    }
    while (logList.children.length > LOG_KEEP) logList.firstChild.remove();
    logNote.hidden = logList.children.length > 0;
    logBox.hidden = logList.children.length === 0;
    if (added && atBottom) logBox.scrollTop = logBox.scrollHeight;
  }
  let logCursor = '';
  async function loadLogs() {
    // The API pages forward (oldest first) and always returns a cursor to
    // poll from; the first load follows it up to 20 pages.
    try {
      for (let page = 0; page < 20 && alive; page++) {
        const body = await api(`/jobs/${enc}/logs`, { query: { cursor: logCursor || undefined, limit: 500 } });
        const lines = (body && (body.logs || body.lines || body.items)) || (Array.isArray(body) ? body : []);
        addLogs(lines);
        if (body && body.next_cursor) logCursor = body.next_cursor;
        if (!(body && (body.more || body.has_more)) || !lines.length) break;
      }
    } catch (e) {
      if (e.status === 401) return;
      logNote.hidden = false;
      logNote.textContent = e.status === 404 ? 'No log is available for this job.' : `Could not load the log: ${e.message}`;
    }
  }

  // ---------- live updates ----------
  let jobPending = 0;
  function scheduleJob(ms = 250) {
    if (jobPending) return;
    jobPending = setTimeout(async () => {
      jobPending = 0;
      try {
        await loadJob();
      } catch (e) {
        if (e.status !== 401) showActionError(e);
      }
    }, ms);
  }
  let archPending = 0;
  function scheduleArch() {
    if (archPending) return;
    archPending = setTimeout(() => {
      archPending = 0;
      loadArch();
    }, 1000);
  }

  function setLive(state, text) {
    live.dataset.live = state;
    live.textContent = text;
  }

  function onEvent(ev) {
    const type = ev.type;
    const d = ev.data;
    if (type === 'metric' || type === 'metrics' || type === 'point' || type === 'points') {
      const pts = eventPoints(d);
      if (pts.length) addPoints(pts);
      else scheduleMetrics();
      return;
    }
    if (type === 'log' || type === 'logs') {
      const lines = Array.isArray(d) ? d : d && Array.isArray(d.lines) ? d.lines : [d];
      addLogs(lines.filter((l) => l && typeof l === 'object'));
      return;
    }
    if (type === 'ping' || type === 'heartbeat' || type === 'hello') return;
    if (type === 'job' && d && d.state) finalSeen = isFinished(d.state);
    // job / stage / anything else: the job changed.
    scheduleJob();
    if (type === 'stage' && d && (d.state === 'succeeded' || d.state === 'skipped')) {
      scheduleArch();
      scheduleMetrics();
    }
  }

  let polling = 0;
  function startPolling() {
    if (polling) return;
    setLive('polling', `updates every ${POLL_MS / 1000} s`);
    polling = setInterval(() => {
      if (document.hidden || !alive) return;
      scheduleJob(0);
      if (job && !isFinished(job.state)) {
        scheduleMetrics(POLL_MS);
        loadLogs();
        scheduleArch();
      }
    }, POLL_MS);
    timers.push(polling);
  }

  let finalSeen = false; // the stream carried the job's final state
  function startStream() {
    const from = stream ? stream.lastEventId() : '';
    finalSeen = false;
    stream = openEvents(`/api/v1/jobs/${enc}/events`, {
      onevent: onEvent,
      onstate: (s, info) => {
        if (!alive) return;
        if (s === 'open') {
          setLive('open', 'live');
          // Whatever happened while we were away is in the job and metrics.
          scheduleJob(0);
        } else if (s === 'retrying' && finalSeen) {
          // gppd ends the stream once a finished job's last event is sent:
          // nothing more will come, so stop instead of reconnecting.
          stream.close();
          setLive('ended', 'finished');
          scheduleJob(0);
          scheduleArch();
          scheduleMetrics();
        } else if (s === 'retrying') {
          setLive('retrying', `reconnecting in ${Math.round(info.wait / 1000)} s`);
        } else if (s === 'connecting') {
          if (live.dataset.live !== 'retrying') setLive('connecting', 'connecting…');
        }
      },
      onerror: (e) => {
        if (!alive) return;
        if (e && e.status === 401) return; // the app returns to sign-in
        startPolling();
      },
    }, { lastEventId: from });
  }

  // ---------- first load ----------
  try {
    await loadJob();
  } catch (e) {
    if (e.status === 401) throw e;
    replace(main,
      h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/jobs' }, 'Jobs')),
      h('h1', { tabindex: '-1' }, e.status === 404 ? 'No such job' : 'Could not load the job'),
      h('p.notice.notice-error', { role: 'alert' }, e.status === 404 ? `There is no job ${id} (or it is not yours).` : e.message));
    ctx.focusHeading();
    return () => {};
  }
  ctx.focusHeading();
  await Promise.all([loadMetrics(), loadArch(), loadLogs()]);
  if (alive) startStream();

  // Durations of running stages tick.
  timers.push(setInterval(() => {
    if (job && !document.hidden && job.stages.some((s) => s.state === 'running')) drawTimeline();
  }, 5000));

  return () => {
    alive = false;
    if (stream) stream.close();
    for (const t of timers) clearInterval(t);
    clearTimeout(metricsPending);
    clearTimeout(jobPending);
    clearTimeout(archPending);
    for (const c of charts.values()) c.chart.destroy();
    if (avsChart) avsChart.destroy();
  };
}

