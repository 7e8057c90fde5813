// The jobs list: newest first, filtered by state / owner / data set / model
// (kept in the URL: #/jobs?state=running&owner=ana), paged with the API's
// cursor ("Load more"), refreshed every few seconds in place (rows update
// without moving focus or the page).

import { api, pageOf } from '../api.js';
import { h, replace, announce, fmtTime, setBusy } from '../dom.js';
import {
  JOB_STATES, readJob, refText, stageLabel, reasonText, badge, progressBar, paramsText,
  accuracyText, isFinished,
} from '../model.js';

export const NAME = 'jobs';
const PAGE = 20;
const REFRESH_MS = 4000;
const REFRESH_MAX = 100;

export async function render(main, route, ctx) {
  document.title = 'Jobs · gppd';
  const f = {
    state: route.params.state || '',
    owner: route.params.owner || '',
    dataset: route.params.dataset || '',
    model: route.params.model || '',
  };
  const filtered = Object.values(f).some(Boolean);
  const selected = new Set();
  let jobs = [];
  let next = '';
  let timer = 0;
  let alive = true;
  let loading = false;

  // ---- filters ----
  const stateSel = h('select#flt-state', { name: 'state' },
    h('option', { value: '' }, 'any state'),
    JOB_STATES.map((s) => h('option', { value: s, selected: s === f.state }, s)));
  const text = (id, name, label, value, placeholder) =>
    h('div.field.field-inline',
      h('label', { for: id }, label),
      h('input', { id, name, type: 'search', value, placeholder, autocomplete: 'off', spellcheck: 'false' }));
  const filterForm = h('form.filters', { role: 'search', 'aria-label': 'Filter jobs' },
    h('div.field.field-inline', h('label', { for: 'flt-state' }, 'State'), stateSel),
    text('flt-owner', 'owner', 'Owner', f.owner, 'anyone'),
    text('flt-dataset', 'dataset', 'Data set', f.dataset, 'any'),
    text('flt-model', 'model', 'Model', f.model, 'any'),
    h('div.filter-actions',
      h('button.btn', { type: 'submit' }, 'Apply'),
      filtered ? h('a.btn.btn-quiet', { href: '#/jobs' }, 'Clear') : null));
  filterForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(filterForm)) if (String(v).trim()) q.set(k, String(v).trim());
    const s = q.toString();
    ctx.navigate('#/jobs' + (s ? '?' + s : ''));
  });

  // ---- table ----
  const tbody = h('tbody');
  const caption = h('caption.sr-only', 'Jobs, newest first');
  const table = h('table.data.jobs-table', caption,
    h('thead', h('tr',
      h('th.col-select', { scope: 'col' }, h('span.sr-only', 'Select to compare')),
      h('th', { scope: 'col' }, 'Job'),
      h('th', { scope: 'col' }, 'State'),
      h('th.col-progress', { scope: 'col' }, 'Progress'),
      h('th.num', { scope: 'col' }, 'Params'),
      h('th.num', { scope: 'col' }, 'Accuracy'),
      h('th', { scope: 'col' }, 'Stage'),
      h('th', { scope: 'col' }, 'Created'))),
    tbody);
  const empty = h('p.empty', { hidden: true });
  const more = h('button.btn', { type: 'button', hidden: true }, 'Load more');
  const count = h('p.count', { 'aria-live': 'polite' });
  const compareBtn = h('button.btn', { type: 'button', disabled: true }, 'Compare selected');
  const listError = h('p.notice.notice-error', { role: 'alert', hidden: true });

  compareBtn.addEventListener('click', () => {
    ctx.navigate('#/compare?ids=' + [...selected].map(encodeURIComponent).join(','));
  });
  const updateCompare = () => {
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size ? `Compare selected (${selected.size})` : 'Compare selected';
  };

  function row(j) {
    const cb = h('input', {
      type: 'checkbox',
      checked: selected.has(j.id),
      'aria-label': `Select ${j.name} to compare`,
      'data-focus': 'cb',
      onchange: (ev) => {
        if (ev.target.checked) selected.add(j.id);
        else selected.delete(j.id);
        updateCompare();
      },
    });
    const cur = j.current && !isFinished(j.state) ? j.current : null;
    const stageCell = cur
      ? [h('span.stage-name', stageLabel(cur, j.total)),
        cur.reason && (cur.state === 'queued' || cur.state === 'lost')
          ? h('span.sub', reasonText(cur.reason)) : null]
      : (j.reason && isFinished(j.state) ? h('span.sub', j.reason) : '–');
    const tr = h('tr', { 'data-id': j.id, 'data-state': j.state },
      h('td.col-select', cb),
      h('td.col-job', { 'data-label': 'Job' },
        h('a.job-link', { href: `#/jobs/${encodeURIComponent(j.id)}`, 'data-focus': 'link' }, j.name),
        h('span.sub', h('code', j.id), j.owner ? ` · ${j.owner}` : '', ' · ', refText(j.dataset), ' · ', refText(j.model))),
      h('td', { 'data-label': 'State' }, badge(j.state)),
      h('td.col-progress', { 'data-label': 'Progress' },
        progressBar(j.progress, `Progress of ${j.name}`),
        h('span.sub', `${j.done}/${j.total} stages`)),
      h('td.num', { 'data-label': 'Params' }, paramsText(j.summary)),
      h('td.num', { 'data-label': 'Accuracy' }, accuracyText(j.summary)),
      h('td', { 'data-label': 'Stage' }, stageCell),
      h('td', { 'data-label': 'Created' }, h('time', { datetime: String(j.created_at || '') }, fmtTime(j.created_at))));
    tr.dataset.sig = JSON.stringify([j.state, j.progress, j.done, j.total, j.name, j.summary, j.current, j.reason]);
    return tr;
  }

  function draw() {
    const byId = new Map([...tbody.children].map((tr) => [tr.dataset.id, tr]));
    const wanted = jobs.map((j) => j.id);
    let prev = null;
    for (const j of jobs) {
      let tr = byId.get(j.id);
      const fresh = row(j);
      if (!tr) {
        tr = fresh;
      } else if (tr.dataset.sig !== fresh.dataset.sig) {
        // Replace the row, keeping focus where it was.
        const focusKey = tr.contains(document.activeElement) ? document.activeElement.dataset.focus : '';
        tr.replaceWith(fresh);
        tr = fresh;
        if (focusKey) {
          const el = tr.querySelector(`[data-focus="${focusKey}"]`);
          if (el) el.focus();
        }
      }
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const [id, tr] of byId) if (!wanted.includes(id)) tr.remove();
    table.hidden = jobs.length === 0;
    empty.hidden = jobs.length !== 0;
    replace(empty, filtered
      ? ['No jobs match these filters. ', h('a', { href: '#/jobs' }, 'Show all jobs.')]
      : ['No jobs yet. ', h('a', { href: '#/submit' }, 'Submit one'), ' or run ', h('code', 'deploy/demo.sh'), '.']);
    more.hidden = !next;
    count.textContent = jobs.length ? `${jobs.length} job${jobs.length === 1 ? '' : 's'} shown${next ? ', more available' : ''}` : '';
  }

  const query = (limit, cursor) => ({ ...f, limit, cursor });

  async function loadMore() {
    if (loading || !next) return;
    loading = true;
    setBusy(more, true);
    try {
      const page = pageOf(await api('/jobs', { query: query(PAGE, next) }), 'jobs');
      const have = new Set(jobs.map((j) => j.id));
      const added = page.items.map(readJob).filter((j) => !have.has(j.id));
      jobs = jobs.concat(added);
      next = page.next;
      draw();
      announce(`${added.length} more job${added.length === 1 ? '' : 's'} loaded.`);
      // Keep keyboard users in place: focus the first new row's link.
      const first = added.length && tbody.querySelector(`tr[data-id="${CSS.escape(added[0].id)}"] a`);
      if (first) first.focus();
      else if (!next) count.focus?.();
    } catch (e) {
      showError(e);
    } finally {
      loading = false;
      setBusy(more, false);
      more.hidden = !next;
    }
  }
  more.addEventListener('click', loadMore);

  function showError(e) {
    listError.hidden = false;
    listError.textContent = `Could not load jobs: ${e.message}`;
  }

  async function refresh() {
    if (!alive || loading || document.hidden) return;
    try {
      const limit = Math.min(REFRESH_MAX, Math.max(PAGE, jobs.length));
      const page = pageOf(await api('/jobs', { query: query(limit) }), 'jobs');
      if (!alive) return;
      const fresh = page.items.map(readJob);
      const freshIds = new Set(fresh.map((j) => j.id));
      const covered = jobs.length <= limit;
      if (covered) {
        jobs = fresh;
        next = page.next;
      } else {
        // Beyond the refreshed window, keep the older rows as they were.
        const lastFresh = fresh.length ? jobs.findIndex((j) => j.id === fresh[fresh.length - 1].id) : -1;
        jobs = fresh.concat(jobs.slice(lastFresh + 1).filter((j) => !freshIds.has(j.id)));
      }
      listError.hidden = true;
      draw();
    } catch (e) {
      if (e.status !== 401) showError(e);
    }
  }

  const refreshNote = h('span.sub.refresh-note', `Updates every ${REFRESH_MS / 1000} s`);
  replace(main,
    h('div.page-head',
      h('h1', { tabindex: '-1' }, 'Jobs'),
      h('div.page-actions', refreshNote, compareBtn, h('a.btn.btn-primary', { href: '#/submit' }, 'Submit a job'))),
    filterForm,
    listError,
    h('div.table-wrap', table),
    empty,
    h('div.list-foot', count, more));
  count.tabIndex = -1;

  try {
    const page = pageOf(await api('/jobs', { query: query(PAGE) }), 'jobs');
    jobs = page.items.map(readJob);
    next = page.next;
  } catch (e) {
    if (e.status === 401) throw e;
    showError(e);
  }
  draw();
  ctx.focusHeading();
  timer = setInterval(refresh, REFRESH_MS);
  return () => {
    alive = false;
    clearInterval(timer);
  };
}
