// Compare: two or more jobs' series of one metric overlaid on one chart.
// The selection lives in the URL (#/compare?ids=a,b&metric=val_accuracy),
// so a comparison can be bookmarked and shared.

import { api, pageOf } from '../api.js';
import { h, replace, announce, fmtValue } from '../dom.js';
import { readJob, badge, paramsText, accuracyText } from '../model.js';
import { lineChart } from '../charts.js';
import { fetchMetrics, stageLayout, onSteps } from '../metrics.js';

export const NAME = 'compare';

export async function render(main, route, ctx) {
  document.title = 'Compare · gppd';
  let ids = (route.params.ids || '').split(',').map((s) => s.trim()).filter(Boolean);
  let metric = route.params.metric || '';
  let alive = true;
  const cache = new Map(); // id -> {job, metrics}
  let chart = null;

  const jobList = h('fieldset.job-pick',
    h('legend', 'Jobs'),
    h('p.hint', 'Choose two or more.'));
  const pickBox = h('div.pick-list');
  jobList.append(pickBox);
  const metricSel = h('select#cmp-metric', { name: 'metric', disabled: true }, h('option', { value: '' }, 'choose jobs first'));
  const chartBox = h('div.compare-chart');
  const tableBox = h('div.compare-table');
  const note = h('p.empty');
  const error = h('p.notice.notice-error', { role: 'alert', hidden: true });

  function syncUrl() {
    const q = new URLSearchParams();
    if (ids.length) q.set('ids', ids.join(','));
    if (metric) q.set('metric', metric);
    const hash = '#/compare' + (q.toString() ? '?' + q.toString().replace(/%2C/g, ',') : '');
    history.replaceState(null, '', hash);
  }

  async function loadJob(id) {
    if (cache.has(id)) return cache.get(id);
    const entry = { job: null, metrics: null, error: '' };
    try {
      entry.job = readJob(await api(`/jobs/${encodeURIComponent(id)}`));
      entry.metrics = await fetchMetrics(id);
    } catch (e) {
      if (e.status === 401) throw e;
      entry.error = e.message;
    }
    cache.set(id, entry);
    return entry;
  }

  async function update() {
    syncUrl();
    error.hidden = true;
    const entries = await Promise.all(ids.map(loadJob));
    if (!alive) return;
    const bad = ids.filter((id, i) => entries[i].error);
    if (bad.length) {
      error.hidden = false;
      error.textContent = `Could not load ${bad.map((id) => `${id} (${cache.get(id).error})`).join(', ')}.`;
    }
    const ok = ids.map((id, i) => ({ id, ...entries[i] })).filter((e) => !e.error);
    const names = [...new Set(ok.flatMap((e) => e.metrics.names))].sort();
    replace(metricSel, names.length
      ? names.map((n) => h('option', { value: n }, n))
      : h('option', { value: '' }, ok.length ? 'no metrics recorded yet' : 'choose jobs first'));
    metricSel.disabled = names.length === 0;
    if (names.length && !names.includes(metric)) {
      metric = names.find((n) => /val.*acc/i.test(n)) || names.find((n) => /acc/i.test(n)) || names[0];
    }
    if (names.length) metricSel.value = metric;
    syncUrl();

    const series = ok.map((e) => {
      // each job's stages end to end on its own step axis
      const s = e.metrics.series.get(metric);
      const steps = s ? onSteps(s, stageLayout(e.metrics.series)) : { x: [], y: [] };
      return { label: `${e.job.name} (${e.id})`, x: steps.x, y: steps.y };
    });
    if (ok.length < 2) {
      note.hidden = false;
      note.textContent = ok.length ? 'Choose one more job to compare.' : 'Choose two or more jobs to compare.';
    } else if (!names.length) {
      note.hidden = false;
      note.textContent = 'None of these jobs has recorded a metric yet: the chart fills as their stages run.';
    } else note.hidden = true;

    if (chart) {
      chart.destroy();
      chart.figure.remove();
      chart = null;
    }
    if (ok.length && names.length) {
      const pct = /acc/i.test(metric);
      chart = lineChart(chartBox, {
        title: `${metric} by job`,
        xLabel: 'step (stages end to end)',
        yLabel: metric,
        yFormat: pct ? (v) => (v === null ? '' : `${+(v * 100).toFixed(1)}%`) : undefined,
        series,
      });
    }
    replace(tableBox, ok.length ? h('div.table-wrap', h('table.data',
      h('caption', 'The jobs compared'),
      h('thead', h('tr',
        h('th', { scope: 'col' }, 'Job'), h('th', { scope: 'col' }, 'State'),
        h('th.num', { scope: 'col' }, 'Params'), h('th.num', { scope: 'col' }, 'Accuracy'),
        h('th.num', { scope: 'col' }, metric ? `latest ${metric}` : 'latest'))),
      h('tbody', ok.map((e) => {
        const s = metric && e.metrics.series.get(metric);
        const last = s && s.y.length ? s.y[s.y.length - 1] : null;
        return h('tr',
          h('th', { scope: 'row' }, h('a', { href: `#/jobs/${encodeURIComponent(e.id)}` }, e.job.name), h('span.sub', h('code', e.id))),
          h('td', badge(e.job.state)),
          h('td.num', paramsText(e.job.summary)),
          h('td.num', accuracyText(e.job.summary)),
          h('td.num', last === null ? '–' : fmtValue(last)));
      })))) : null);
  }

  metricSel.addEventListener('change', () => {
    metric = metricSel.value;
    update();
    announce(`Showing ${metric}.`);
  });

  replace(main,
    h('div.page-head', h('h1', { tabindex: '-1' }, 'Compare jobs')),
    error,
    h('div.compare-layout',
      h('div.compare-side',
        jobList,
        h('div.field', h('label', { for: 'cmp-metric' }, 'Metric'), metricSel)),
      h('div.compare-main', note, chartBox, tableBox)));

  // The pick list: the newest jobs plus any in the URL.
  let recent = [];
  try {
    recent = pageOf(await api('/jobs', { query: { limit: 50 } }), 'jobs').items.map(readJob);
  } catch (e) {
    if (e.status === 401) throw e;
    error.hidden = false;
    error.textContent = `Could not list jobs: ${e.message}`;
  }
  const known = new Set(recent.map((j) => j.id));
  const extra = ids.filter((id) => !known.has(id)).map((id) => ({ id, name: id, state: '' }));
  const all = extra.concat(recent);
  if (!all.length) pickBox.append(h('p.empty', 'No jobs yet.'));
  for (const j of all) {
    const cid = `cmp-${j.id}`;
    const cb = h('input', { type: 'checkbox', id: cid, value: j.id, checked: ids.includes(j.id) });
    cb.addEventListener('change', () => {
      if (cb.checked && !ids.includes(j.id)) ids.push(j.id);
      if (!cb.checked) ids = ids.filter((x) => x !== j.id);
      update();
    });
    pickBox.append(h('div.check', cb, h('label', { for: cid }, j.name, ' ', h('span.sub', h('code', j.id)), j.state ? [' ', badge(j.state)] : null)));
  }
  ctx.focusHeading();
  await update();
  return () => {
    alive = false;
    if (chart) chart.destroy();
  };
}
