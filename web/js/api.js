// The gppd HTTP API client: bearer token from sessionStorage, the one error
// shape {"error": {"code", "message", "field"}}, and a global "signed out"
// signal on 401.  See README-dashboard.md for why the token lives in
// sessionStorage and travels in the Authorization header.

const TOKEN_KEY = 'gppd.token';
export const API = '/api/v1';

/** An API failure: HTTP status, machine code, human message, field path. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || '';
    this.field = field || '';
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives only as long as this page */
  }
  memoryToken = token || '';
}

let memoryToken = '';
function token() {
  return getToken() || memoryToken;
}

/** Called with an ApiError when the server answers 401 to a signed-in request. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** Headers for an authenticated request. */
export function authHeaders(extra = {}) {
  const t = token();
  return t ? { Authorization: `Bearer ${t}`, ...extra } : { ...extra };
}

/** Turn a failed Response into an ApiError (reads the JSON error body if any). */
export async function errorFrom(res) {
  let code = '';
  let message = '';
  let field = '';
  try {
    const text = await res.text();
    if (text) {
      try {
        const body = JSON.parse(text);
        const e = body && body.error;
        if (e && typeof e === 'object') {
          code = e.code || '';
          message = e.message || '';
          field = e.field || '';
        } else if (typeof e === 'string') {
          message = e;
        }
      } catch {
        message = text.slice(0, 300);
      }
    }
  } catch {
    /* body unreadable */
  }
  if (!message) message = `${res.status} ${res.statusText || 'error'}`.trim();
  return new ApiError(res.status, code, message, field);
}

/**
 * Call the API.  path is relative to /api/v1 ("/jobs") or absolute ("/api/v1/...").
 * opts: {method, body (object -> JSON), bytes (ArrayBuffer/Blob, sent as
 * application/octet-stream), query (object), signal, raw (return the
 * Response), headers, auth (default true)}.  Returns the parsed JSON (null for
 * an empty body).  Throws ApiError; a 401 also calls the unauthorized handler
 * unless opts.quiet401.
 */
export async function api(path, opts = {}) {
  const url = new URL(path.startsWith('/api/') ? path : API + path, location.origin);
  if (opts.query) {
    for (const [k, v] of Object.entries(opts.query)) {
      if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
    }
  }
  const headers = opts.auth === false ? { ...(opts.headers || {}) } : authHeaders(opts.headers || {});
  const init = { method: opts.method || 'GET', headers, signal: opts.signal, cache: 'no-store' };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  } else if (opts.bytes !== undefined) {
    headers['Content-Type'] = 'application/octet-stream';
    init.body = opts.bytes;
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'gppd is not reachable (network error). Is the daemon running?', '');
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && !opts.quiet401) onUnauthorized(err);
    throw err;
  }
  if (opts.raw) return res;
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, 'bad_response', 'gppd answered with something that is not JSON', '');
  }
}

/**
 * A page of a collection, whatever the envelope: returns {items, next} where
 * next is the cursor of the following page or '' at the end.
 * key: the collection name ("jobs", "workers", ...).
 */
export function pageOf(body, key) {
  if (Array.isArray(body)) return { items: body, next: '' };
  if (!body || typeof body !== 'object') return { items: [], next: '' };
  const items = body[key] || body.items || body.data || [];
  let next = body.next_cursor ?? body.cursor ?? body.next ?? '';
  if (next && typeof next === 'object') next = next.cursor || '';
  if (body.has_more === false || body.more === false) next = '';
  return { items: Array.isArray(items) ? items : [], next: next ? String(next) : '' };
}

/** Every item of a paged list (GET path?limit=&cursor=, the items under `key`),
 * following next_cursor for at most maxPages pages. */
export async function fetchAll(path, key, limit, maxPages = 10) {
  const all = [];
  let cursor = '';
  for (let i = 0; i < maxPages; i++) {
    const page = pageOf(await api(path, { query: { limit, cursor: cursor || undefined } }), key);
    all.push(...page.items);
    cursor = page.next;
    if (!cursor) break;
  }
  return all;
}

/** Download a binary response (it needs the Authorization header, so no plain link). */
export async function download(path, query, filename) {
  const res = await api(path, { query, raw: true });
  const blob = await res.blob();
  const cd = res.headers.get('Content-Disposition') || '';
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  const name = (m && decodeURIComponent(m[1])) || filename;
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60000);
  return { name, size: blob.size };
}
