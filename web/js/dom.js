// Small DOM helpers: build elements without innerHTML (so no text from the
// API is ever parsed as markup), announce status, format numbers and times.

/**
 * h('tag.class#id', {attr: value, onclick: fn}, ...children)
 * Children may be strings, numbers, nodes, arrays, null/undefined/false (skipped).
 */
export function h(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'text') el.textContent = v;
      else if (k === 'value' && 'value' in el) el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'selected' || k === 'hidden') {
        el[k] = !!v;
      } else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

/** Append children (same rules as h) to el. */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace all children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let toastTimer = 0;
/**
 * Announce a message in the polite live region (also shown as a toast).
 * kind: 'info' | 'error' | 'ok'.
 */
export function announce(message, kind = 'info') {
  const el = document.getElementById('status');
  if (!el) return;
  el.dataset.kind = kind;
  // Clear first so that the same text twice is announced twice.
  el.textContent = '';
  requestAnimationFrame(() => {
    el.textContent = message;
    el.classList.add('toast-show');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => el.classList.remove('toast-show'), kind === 'error' ? 8000 : 4000);
  });
}

const nf0 = new Intl.NumberFormat('en', { maximumFractionDigits: 0 });

/** 1234567 -> "1.23 M"; small integers as they are. */
export function fmtCount(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return '–';
  n = Number(n);
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toPrecision(3) + ' G';
  if (a >= 1e6) return (n / 1e6).toPrecision(3) + ' M';
  if (a >= 1e4) return (n / 1e3).toPrecision(3) + ' k';
  return nf0.format(n);
}

/** 0.9123 -> "91.23 %". */
export function fmtPct(x, digits = 2) {
  if (x === null || x === undefined || !Number.isFinite(Number(x))) return '–';
  return (Number(x) * 100).toFixed(digits) + ' %';
}

/** A metric value: compact but exact enough to read. */
export function fmtValue(x) {
  if (x === null || x === undefined || !Number.isFinite(Number(x))) return '–';
  x = Number(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(3);
  return String(Number(x.toPrecision(5)));
}

/** Unix ms or RFC 3339 text -> Date, or null. */
export function toDate(t) {
  if (t === null || t === undefined || t === '' || t === 0) return null;
  const d = typeof t === 'number' ? new Date(t) : new Date(String(t));
  return Number.isNaN(d.getTime()) ? null : d;
}

/** A short local date-time, "2025-01-02 03:04". */
export function fmtTime(t) {
  const d = toDate(t);
  if (!d) return '–';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** Seconds -> "4 s", "3 min 2 s", "2 h 5 min". */
export function fmtDuration(sec) {
  if (sec === null || sec === undefined || !Number.isFinite(sec)) return '–';
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
  return `${Math.floor(sec / 3600)} h ${Math.floor((sec % 3600) / 60)} min`;
}

/** Time since t (unix ms / RFC 3339) in words; "–" when unknown. */
export function fmtAge(t, now = Date.now()) {
  const d = toDate(t);
  if (!d) return '–';
  return fmtDuration((now - d.getTime()) / 1000) + ' ago';
}

/** A tiny inline icon-free spinner-free "busy" marker for buttons. */
export function setBusy(button, busy) {
  if (!button) return;
  button.disabled = !!busy;
  if (busy) button.setAttribute('aria-busy', 'true');
  else button.removeAttribute('aria-busy');
}
