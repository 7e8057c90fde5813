// Models: the trained networks the user uploaded (GET /api/v1/models; an
// admin sees everyone's), with what each holds and how many jobs name it.
// "Compress" opens the submit form with the model filled in; "Delete"
// (DELETE /api/v1/models/{sha256}) asks once more on the same button, and
// says why when gppd refuses (a queued or running job uses the model).

import { api, fetchAll } from '../api.js';
import { h, replace, announce, setBusy, fmtCount, fmtTime } from '../dom.js';

export const NAME = 'models';
const CONFIRM_MS = 5000;

export async function render(main, route, ctx) {
  document.title = 'Models · gppd';
  let models = [];
  let alive = true;
  const tbody = h('tbody');
  const ownerCol = h('th', { scope: 'col' }, 'Owner');
  const table = h('table.data.models-table',
    h('caption.sr-only', 'Uploaded models'),
    h('thead', h('tr',
      h('th', { scope: 'col' }, 'Model'),
      ownerCol,
      h('th.num', { scope: 'col' }, 'Parameters'),
      h('th', { scope: 'col' }, 'Input'),
      h('th.num', { scope: 'col' }, 'Classes'),
      h('th.num', { scope: 'col' }, 'Size'),
      h('th', { scope: 'col' }, 'Uploaded'),
      h('th.num', { scope: 'col' }, 'Jobs'),
      h('th', { scope: 'col' }, h('span.sr-only', 'Actions')))),
    tbody);
  const empty = h('div.empty', { hidden: true },
    h('p', 'You have not uploaded a trained model yet.'),
    h('p', 'Upload a .gppm on the ', h('a', { href: '#/submit' }, 'Submit'), ' page, or with ',
      h('code', 'curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" --data-binary @mine.gppm $GPPD/api/v1/models'),
      '.'));
  const error = h('p.notice.notice-error#models-error', { role: 'alert', hidden: true });

  async function remove(m, button) {
    if (button.dataset.confirm !== '1') {
      button.dataset.confirm = '1';
      button.textContent = 'Confirm delete';
      setTimeout(() => {
        if (button.isConnected && button.dataset.confirm === '1') {
          button.dataset.confirm = '';
          button.textContent = 'Delete';
        }
      }, CONFIRM_MS);
      return;
    }
    error.hidden = true;
    setBusy(button, true);
    try {
      const r = await api(`/models/${encodeURIComponent(m.sha256)}`, { method: 'DELETE' });
      announce(r.file_removed
        ? `Deleted ${m.sha256.slice(0, 12)}…; its file is gone.`
        : `Deleted ${m.sha256.slice(0, 12)}…; its file stays for the jobs that used it.`, 'ok');
      await load();
    } catch (e) {
      if (e.status === 401) throw e;
      error.hidden = false;
      error.textContent = `Could not delete ${m.sha256.slice(0, 12)}…: ${e.message}`;
      setBusy(button, false);
      button.dataset.confirm = '';
      button.textContent = 'Delete';
    }
  }

  function draw() {
    const admin = models.some((m) => m.owner !== models[0].owner);
    ownerCol.hidden = !admin;
    replace(tbody, models.map((m) => {
      const del = h('button.btn.btn-small.btn-danger', { type: 'button', 'aria-label': `Delete ${m.sha256.slice(0, 12)}` }, 'Delete');
      del.addEventListener('click', () => remove(m, del));
      const cells = [
        h('td', { 'data-label': 'Model' }, h('code', { title: m.sha256 }, `${m.sha256.slice(0, 12)}…`)),
        h('td', { 'data-label': 'Owner', hidden: !admin }, m.owner),
        h('td.num', { 'data-label': 'Parameters' }, fmtCount(m.params)),
        h('td', { 'data-label': 'Input' }, (m.input || []).join('×')),
        h('td.num', { 'data-label': 'Classes' }, String(m.classes)),
        h('td.num', { 'data-label': 'Size' }, `${(m.size / 1048576).toFixed(1)} MiB`),
        h('td', { 'data-label': 'Uploaded' }, fmtTime(m.created_at)),
        h('td.num', { 'data-label': 'Jobs' }, m.jobs
          ? h('a', { href: `#/jobs?model=${encodeURIComponent('checkpoint:' + m.sha256)}` }, String(m.jobs))
          : '0'),
        h('td.actions', h('a.btn.btn-small', { href: `#/submit?model=${m.sha256}`, 'aria-label': `Compress ${m.sha256.slice(0, 12)}` }, 'Compress'), ' ', del),
      ];
      return h('tr', { 'data-sha': m.sha256 }, cells);
    }));
    table.hidden = models.length === 0;
    empty.hidden = models.length !== 0;
  }

  async function load() {
    try {
      const all = await fetchAll('/models', 'models', 1000);
      if (!alive) return;
      models = all.reverse();
      error.hidden = true;
      draw();
    } catch (e) {
      if (e.status === 401) throw e;
      error.hidden = false;
      error.textContent = `Could not load models: ${e.message}`;
    }
  }

  replace(main,
    h('div.page-head', h('h1', { tabindex: '-1' }, 'Models'),
      h('div.page-actions', h('span.sub', 'Trained networks you uploaded, newest first'))),
    error,
    h('div.table-wrap', table),
    empty);
  await load();
  ctx.focusHeading();
  return () => {
    alive = false;
  };
}
