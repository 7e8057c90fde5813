// Workers: connected and recently lost workers (GET /api/v1/workers) with
// device, labels, state, current stage and heartbeat age (ticking every
// second between refreshes), and a drain button
// (POST /api/v1/workers/{id}/drain: the worker finishes its stage and takes
// nothing new).

import { api, fetchAll, ApiError } from '../api.js';
import { h, replace, announce, fmtDuration, toDate, setBusy } from '../dom.js';
import { readWorker, badge } from '../model.js';

export const NAME = 'workers';
const REFRESH_MS = 5000;

export async function render(main, route, ctx) {
  document.title = 'Workers · gppd';
  let workers = [];
  let alive = true;
  const tbody = h('tbody');
  const table = h('table.data.workers-table',
    h('caption.sr-only', 'Workers'),
    h('thead', h('tr',
      h('th', { scope: 'col' }, 'Worker'),
      h('th', { scope: 'col' }, 'Device'),
      h('th', { scope: 'col' }, 'Labels'),
      h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'Current stage'),
      h('th.num', { scope: 'col' }, 'Heartbeat'),
      h('th', { scope: 'col' }, h('span.sr-only', 'Actions')))),
    tbody);
  const empty = h('div.empty', { hidden: true },
    h('p', 'No workers have connected yet.'),
    h('p', 'Start one with ', h('code', 'gpp-worker --connect HOST:7070 --token-file DATA_DIR/worker.token --device cpu'),
      ', or run gppd with ', h('code', '--local-workers N'), '.'));
  const error = h('p.notice.notice-error', { role: 'alert', hidden: true });

  function ageOf(w) {
    if (w.ageS !== null) return w.ageS + (Date.now() - w.fetchedAt) / 1000;
    const d = toDate(w.lastSeen);
    return d ? (Date.now() - d.getTime()) / 1000 : null;
  }

  function stageCell(w) {
    const s = w.stage;
    if (!s) return '–';
    if (typeof s === 'object') {
      const job = s.job || s.job_id;
      const label = `${s.kind || 'stage'}${s.round ? ' ' + s.round : ''}`;
      return job ? [h('a', { href: `#/jobs/${encodeURIComponent(job)}` }, job), ' ', h('span.sub', label)] : label;
    }
    return String(s);
  }

  async function drain(w, button) {
    error.hidden = true;
    setBusy(button, true);
    try {
      await api(`/workers/${encodeURIComponent(w.id)}/drain`, { method: 'POST' });
      announce(`Worker ${w.name} is draining: it finishes its stage and takes nothing new.`, 'ok');
      await load();
    } catch (e) {
      error.hidden = false;
      error.textContent = e instanceof ApiError && e.status === 404 && e.code !== 'not_found'
        ? 'This gppd does not support draining yet.'
        : `Could not drain ${w.name}: ${e.message}`;
      setBusy(button, false);
    }
  }

  function draw() {
    const focusedId = document.activeElement && document.activeElement.closest('tr')
      ? document.activeElement.closest('tr').dataset.id : '';
    replace(tbody, workers.map((w) => {
      const canDrain = w.state === 'idle' || w.state === 'busy';
      const btn = h('button.btn.btn-small', {
        type: 'button',
        disabled: !canDrain,
        'aria-label': `Drain ${w.name}`,
      }, w.state === 'draining' ? 'Draining' : 'Drain');
      btn.addEventListener('click', () => drain(w, btn));
      const labels = Object.entries(w.labels || {});
      return h('tr', { 'data-id': w.id, 'data-state': w.state },
        h('td', { 'data-label': 'Worker' }, h('span.stage-name', w.name),
          h('span.sub', h('code', w.id), w.host ? ` · ${w.host}` : '', w.threads ? ` · ${w.threads} threads` : '')),
        h('td', { 'data-label': 'Device' }, w.devices.length ? w.devices.join(', ') : '–'),
        h('td', { 'data-label': 'Labels' }, labels.length
          ? h('ul.chips', labels.map(([k, v]) => h('li.chip', `${k}=${v}`))) : '–'),
        h('td', { 'data-label': 'State' }, badge(w.state)),
        h('td', { 'data-label': 'Current stage' }, stageCell(w)),
        h('td.num.age', { 'data-label': 'Heartbeat' }, ageText(w)),
        h('td', btn));
    }));
    if (focusedId) {
      const b = tbody.querySelector(`tr[data-id="${CSS.escape(focusedId)}"] button`);
      if (b && !b.disabled) b.focus();
    }
    table.hidden = workers.length === 0;
    empty.hidden = workers.length !== 0;
  }

  function ageText(w) {
    const a = ageOf(w);
    return a === null ? '–' : `${fmtDuration(a)} ago`;
  }

  async function load() {
    try {
      const all = await fetchAll('/workers', 'workers', 500);
      if (!alive) return;
      workers = all.map(readWorker);
      error.hidden = true;
      draw();
    } catch (e) {
      if (e.status === 401) throw e;
      error.hidden = false;
      error.textContent = `Could not load workers: ${e.message}`;
    }
  }

  replace(main,
    h('div.page-head', h('h1', { tabindex: '-1' }, 'Workers'),
      h('div.page-actions', h('span.sub.refresh-note', `Updates every ${REFRESH_MS / 1000} s`))),
    error,
    h('div.table-wrap', table),
    empty);
  await load();
  ctx.focusHeading();
  const t1 = setInterval(() => {
    if (!document.hidden) load().catch(() => {});
  }, REFRESH_MS);
  const t2 = setInterval(() => {
    for (const tr of tbody.children) {
      const w = workers.find((x) => x.id === tr.dataset.id);
      const cell = tr.querySelector('.age');
      if (w && cell) cell.textContent = ageText(w);
    }
  }, 1000);
  return () => {
    alive = false;
    clearInterval(t1);
    clearInterval(t2);
  };
}
