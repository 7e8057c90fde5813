// Submit a job: a form of every job-spec field with its default filled in
// and its rule shown.  Only fields changed from their default are sent (the
// daemon fills the rest and shows the full spec back on the job page).  An
// error from the API ({"error": {"code", "message", "field"}}, 422) is shown
// next to the input whose name is the field path, which gets
// aria-invalid and focus.  Each form carries an Idempotency-Key, so a
// double submit makes one job.

import { api, pageOf, fetchAll, ApiError } from '../api.js';
import { h, replace, announce, setBusy, fmtCount, fmtTime } from '../dom.js';
import { SECTIONS, FIELDS, ZOO, inputId, toText, readField, setPath, fieldFor, FieldError } from '../jobspec.js';

export const NAME = 'submit';

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

export async function render(main, route, ctx) {
  document.title = 'Submit a job · gppd';
  let idemKey = newKey();
  const formError = h('div.notice.notice-error#submit-error', { role: 'alert', hidden: true });
  const preview = h('pre.spec#submit-preview');
  const submitBtn = h('button.btn.btn-primary#submit-job', { type: 'submit' }, 'Submit job');
  const resetBtn = h('button.btn.btn-quiet', { type: 'button' }, 'Reset to defaults');
  const datasetsList = h('datalist#list-datasets');
  const zooList = h('datalist#list-zoo', ZOO.map((z) => h('option', { value: z })));

  function fieldEl(f) {
    const id = inputId(f.path);
    const leaf = f.path.split('.').pop();
    const hintId = `${id}-hint`;
    const errId = `${id}-error`;
    const defText = f.def === null || f.def === undefined
      ? (f.placeholder ? `default: ${f.placeholder}` : 'default: none')
      : f.type === 'labels' ? 'default: none' : `default ${toText(f, f.def)}`;
    const hint = h('p.hint', { id: hintId }, f.required ? 'required · ' : '', defText, f.rule ? ` · ${f.rule}` : '');
    const err = h('p.field-error', { id: errId, hidden: true });
    let input;
    const common = { id, name: f.path, 'aria-describedby': hintId, 'data-path': f.path };
    if (f.type === 'bool') {
      input = h('input', { ...common, type: 'checkbox', checked: !!f.def });
      return h('div.field.field-check', { 'data-field': f.path }, input, h('label', { for: id }, leaf), err, hint);
    }
    if (f.type === 'enum') {
      input = h('select', common, f.options.map((o) => h('option', { value: o, selected: o === f.def }, o)));
    } else {
      const numeric = f.type === 'int' || f.type === 'num';
      input = h('input', {
        ...common,
        type: 'text',
        value: toText(f, f.def),
        placeholder: f.placeholder || '',
        inputmode: f.type === 'int' ? 'numeric' : f.type === 'num' ? 'decimal' : undefined,
        autocomplete: 'off',
        spellcheck: 'false',
        autocapitalize: 'off',
        required: f.required || undefined,
        'aria-required': f.required ? 'true' : undefined,
        list: f.list === 'datasets' ? 'list-datasets' : f.list === 'zoo' ? 'list-zoo' : undefined,
        class: numeric ? 'input-num' : undefined,
      });
    }
    return h('div.field', { 'data-field': f.path }, h('label', { for: id }, leaf), input, err, hint);
  }

  const sections = SECTIONS.map((s) => {
    const body = h('div.field-grid', s.fields.map(fieldEl));
    if (s.open) {
      return h('fieldset.spec-section', { 'data-section': s.key || 'job' }, h('legend', s.title), body);
    }
    return h('details.spec-section', { 'data-section': s.key },
      h('summary', h('span.summary-title', s.title), h('span.sub.summary-note', '')),
      h('fieldset', h('legend.sr-only', s.title), body));
  });

  const form = h('form.submit-form', { novalidate: true, 'aria-labelledby': 'submit-title' },
    formError,
    sections,
    h('details.spec-section.preview',
      h('summary', h('span.summary-title', 'Request body'), h('span.sub.summary-note', 'what POST /api/v1/jobs receives')),
      preview),
    h('div.form-actions', submitBtn, resetBtn),
    datasetsList, zooList);

  const inputOf = (path) => form.elements.namedItem(path);

  // A trained network from elsewhere: upload its .gppm (POST /api/v1/models)
  // and the model field names it by its sha256.
  const upInput = h('input#submit-upload', { type: 'file', accept: '.gppm,application/octet-stream',
    'aria-describedby': 'submit-upload-hint' });
  const upStatus = h('p.hint#submit-upload-status', { role: 'status' });
  const upField = h('div.field.field-upload', { 'data-field': 'upload' },
    h('label', { for: 'submit-upload' }, 'or upload a trained model (.gppm)'), upInput,
    h('p.hint#submit-upload-hint', 'the network and its weights, e.g. saved from PyTorch with deploy/python/gppm.py; ',
      'the job then starts by evaluating it on the data set'),
    upStatus);
  // ... or one uploaded before (GET /api/v1/models: the caller's, newest first)
  const mineSel = h('select#submit-uploaded', { 'aria-describedby': 'submit-uploaded-hint' });
  const mineField = h('div.field.field-uploaded', { 'data-field': 'uploaded', hidden: true },
    h('label', { for: 'submit-uploaded' }, 'or one you uploaded'), mineSel,
    h('p.hint#submit-uploaded-hint', 'newest first; choosing one names it in the model field'));
  inputOf('model').closest('.field').after(upField, mineField);
  async function loadMine(selected) {
    try {
      const items = (await fetchAll('/models', 'models', 1000)).reverse();
      replace(mineSel, [h('option', { value: '' }, items.length ? `${items.length} uploaded` : 'none'),
        ...items.map((m) => h('option', { value: m.sha256, selected: m.sha256 === selected },
          `${m.sha256.slice(0, 12)}… · ${fmtCount(m.params)} params · ${m.input.join('×')} · ` +
          `${m.classes} classes · ${fmtTime(m.created_at)}`))]);
      mineField.hidden = items.length === 0;
    } catch (e) {
      if (e.status === 401) throw e;
    }
  }
  mineSel.addEventListener('change', () => {
    if (!mineSel.value) return;
    const model = inputOf('model');
    model.value = JSON.stringify({ checkpoint: mineSel.value });
    clearFieldError(model);
    updateNotes();
  });
  upInput.addEventListener('change', async () => {
    const file = upInput.files && upInput.files[0];
    if (!file) return;
    upStatus.textContent = `Uploading ${file.name} (${fmtCount(file.size)} bytes)…`;
    upField.classList.remove('has-error');
    setBusy(submitBtn, true);
    try {
      const m = await api('/models', { method: 'POST', bytes: await file.arrayBuffer() });
      const model = inputOf('model');
      model.value = JSON.stringify({ checkpoint: m.sha256 });
      clearFieldError(model);
      upStatus.textContent = `${file.name}: ${fmtCount(m.params)} params, input [${m.input.join(', ')}], ` +
        `${m.classes} classes${m.created ? '' : ' (already uploaded)'}; the model field now names it.`;
      announce(`Uploaded ${file.name}.`, 'ok');
      updateNotes();
      await loadMine(m.sha256);
    } catch (e) {
      upInput.value = '';
      if (e.status === 401) return; // back to sign-in
      upField.classList.add('has-error');
      upStatus.textContent = `Not uploaded: ${e.message}`;
    } finally {
      setBusy(submitBtn, false);
    }
  });

  /** Build the spec from the form; throws FieldError. */
  function collect() {
    const spec = {};
    for (const f of FIELDS) {
      const el = inputOf(f.path);
      if (!el) continue;
      const r = readField(f, el.value, el.checked);
      if (f.required && (r.value === '' || r.value === null)) {
        throw new FieldError(f.path, `${f.path} is required`);
      }
      if (r.set) setPath(spec, f.path, r.value);
    }
    return spec;
  }

  function updateNotes() {
    for (const d of form.querySelectorAll('details.spec-section[data-section]')) {
      const key = d.dataset.section;
      const changed = FIELDS.filter((f) => f.path.startsWith(key + '.')).filter((f) => {
        const el = inputOf(f.path);
        try {
          return el && readField(f, el.value, el.checked).set;
        } catch {
          return true;
        }
      }).length;
      const note = d.querySelector('.summary-note');
      if (note) note.textContent = changed ? `${changed} changed` : 'defaults';
    }
    try {
      preview.textContent = JSON.stringify(collect(), null, 2);
    } catch (e) {
      preview.textContent = `(not valid yet: ${e.message})`;
    }
  }

  function clearErrors() {
    formError.hidden = true;
    formError.replaceChildren();
    for (const el of form.querySelectorAll('[aria-invalid="true"]')) clearFieldError(el);
  }

  function clearFieldError(el) {
    el.removeAttribute('aria-invalid');
    const err = document.getElementById(`${el.id}-error`);
    if (err) {
      err.hidden = true;
      err.textContent = '';
    }
    el.setAttribute('aria-describedby', `${el.id}-hint`);
    el.closest('.field')?.classList.remove('has-error');
  }

  /** Show an error at the field of `path` (or at the top); move focus there. */
  function showError(path, message, code) {
    const known = fieldFor(path);
    const el = known ? inputOf(known) : null;
    formError.hidden = false;
    if (el) {
      const err = document.getElementById(`${el.id}-error`);
      err.textContent = message;
      err.hidden = false;
      el.setAttribute('aria-invalid', 'true');
      el.setAttribute('aria-describedby', `${el.id}-error ${el.id}-hint`);
      el.closest('.field')?.classList.add('has-error');
      const det = el.closest('details');
      if (det) det.open = true;
      replace(formError, h('p', 'The job was not submitted: ', h('a', { href: `#${el.id}`, 'data-jump': el.id }, message), code ? h('span.sub', ` (${code})`) : null));
      el.focus();
      if (el.select && el.type === 'text') el.select();
    } else {
      replace(formError, h('p', 'The job was not submitted: ', message, path ? [' (field ', h('code', path), ')'] : null, code ? h('span.sub', ` (${code})`) : null));
      formError.setAttribute('tabindex', '-1');
      formError.focus();
    }
  }

  // A link in the error summary moves focus to the field (not the URL hash).
  formError.addEventListener('click', (ev) => {
    const a = ev.target.closest('a[data-jump]');
    if (!a) return;
    ev.preventDefault();
    document.getElementById(a.dataset.jump)?.focus();
  });

  form.addEventListener('input', (ev) => {
    if (ev.target.getAttribute && ev.target.getAttribute('aria-invalid') === 'true') clearFieldError(ev.target);
    updateNotes();
  });
  form.addEventListener('change', updateNotes);

  resetBtn.addEventListener('click', () => {
    for (const f of FIELDS) {
      const el = inputOf(f.path);
      if (!el) continue;
      if (f.type === 'bool') el.checked = !!f.def;
      else el.value = toText(f, f.def);
    }
    clearErrors();
    updateNotes();
    announce('Form reset to the defaults.');
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    let spec;
    try {
      spec = collect();
    } catch (e) {
      showError(e.field || '', e.message, 'checked in the browser');
      return;
    }
    setBusy(submitBtn, true);
    submitBtn.textContent = 'Submitting…';
    try {
      const job = await api('/jobs', { method: 'POST', body: spec, headers: { 'Idempotency-Key': idemKey } });
      idemKey = newKey();
      announce(`Job ${job.name || job.id} submitted.`, 'ok');
      ctx.navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (e) {
      if (e instanceof ApiError) {
        // A refused spec may be edited and sent again under a new key.
        if (e.status === 422 || e.status === 400 || e.status === 409) idemKey = newKey();
        if (e.status !== 401) showError(e.field, e.message, e.code ? `${e.code}, HTTP ${e.status}` : `HTTP ${e.status}`);
      } else {
        showError('', e.message || String(e), '');
      }
    } finally {
      setBusy(submitBtn, false);
      submitBtn.textContent = 'Submit job';
    }
  });

  replace(main,
    h('div.page-head', h('h1#submit-title', { tabindex: '-1' }, 'Submit a job')),
    h('p.lede', 'Every field shows its default; only ', h('strong', 'dataset'), ' and ', h('strong', 'model'),
      ' are required. Changed fields are sent; the daemon checks every rule and fills the rest.'),
    form);
  updateNotes();
  ctx.focusHeading();

  // #/submit?model=SHA256 (the Models page's "Compress"): that upload
  const wanted = /^[0-9a-f]{64}$/.test(route.params.model || '') ? route.params.model : '';
  if (wanted) {
    const model = inputOf('model');
    model.value = JSON.stringify({ checkpoint: wanted });
    updateNotes();
  }
  await loadMine(wanted);
  // Registered data sets for the dataset field's suggestions.
  try {
    const page = pageOf(await api('/datasets', { query: { limit: 100 } }), 'datasets');
    replace(datasetsList, page.items.map((d) => h('option', { value: d.name }, d.format ? `${d.name} (${d.format})` : d.name)));
  } catch (e) {
    if (e.status === 401) throw e;
  }
  return () => {};
}
