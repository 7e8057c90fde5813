// The dashboard shell: sign-in, the hash router, the header (navigation,
// daemon health, sign-out).  Each view is a module exporting
// render(main, params, ctx) that may return a cleanup function; the router
// calls the cleanup before the next view (timers, live streams).

import { api, getToken, setToken, setUnauthorizedHandler, ApiError } from './api.js';
import { h, replace, announce } from './dom.js';
import * as jobsView from './views/jobs.js';
import * as jobView from './views/job.js';
import * as compareView from './views/compare.js';
import * as workersView from './views/workers.js';
import * as modelsView from './views/models.js';
import * as submitView from './views/submit.js';
import * as signinView from './views/signin.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');
const healthEl = document.getElementById('health');

let cleanup = null;
let healthTimer = 0;
let signinMessage = '';
let firstRender = true;
let returnTo = '';

/** Parse location.hash into {name, id, params}. */
function parseRoute() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean);
  const params = Object.fromEntries(new URLSearchParams(query));
  return { name: parts[0] || 'jobs', id: parts[1] ? decodeURIComponent(parts[1]) : '', params, raw };
}

const ROUTES = {
  jobs: (r) => (r.id ? jobView : jobsView),
  compare: () => compareView,
  workers: () => workersView,
  models: () => modelsView,
  submit: () => submitView,
};

function setNav(name) {
  for (const a of nav.querySelectorAll('a[data-route]')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** Show the view of the current hash. */
async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a view's cleanup must not stop navigation */
    }
    cleanup = null;
  }
  const r = parseRoute();
  if (!getToken()) {
    showSignin(r.raw);
    return;
  }
  nav.hidden = false;
  session.hidden = false;
  startHealth();
  const pick = ROUTES[r.name];
  if (!pick) {
    setNav('');
    document.title = 'Not found · gppd';
    replace(main, h('h1', { tabindex: '-1' }, 'Not found'),
      h('p', 'There is no page at ', h('code', '#' + r.raw), '. ', h('a', { href: '#/jobs' }, 'Go to the jobs.')));
    focusHeading();
    return;
  }
  const view = pick(r);
  setNav(r.name);
  main.replaceChildren();
  main.dataset.view = view.NAME || r.name;
  // On the first load the browser's own start position is right; after a
  // navigation, focus goes to the new view's heading.
  const first = firstRender;
  firstRender = false;
  const ctx = { navigate, focusHeading: first ? () => {} : focusHeading, route: r };
  try {
    cleanup = (await view.render(main, r, ctx)) || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // handled: back to sign-in
    replace(main, h('h1', { tabindex: '-1' }, 'Something went wrong'),
      h('p.notice.notice-error', { role: 'alert' }, e && e.message ? e.message : String(e)));
    focusHeading();
  }
}

/** Move focus to the view's heading (after a navigation). */
function focusHeading() {
  const h1 = main.querySelector('h1');
  if (h1) {
    if (!h1.hasAttribute('tabindex')) h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: false });
  }
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function showSignin(wanted) {
  firstRender = false; // the view after sign-in is reached by navigation
  stopHealth();
  nav.hidden = true;
  session.hidden = true;
  setNav('');
  if (wanted && !wanted.startsWith('/signin')) returnTo = wanted;
  main.replaceChildren();
  main.dataset.view = 'signin';
  signinView.render(main, {
    message: signinMessage,
    onSignedIn: () => {
      signinMessage = '';
      const to = returnTo && returnTo !== '/signin' ? '#' + returnTo : '#/jobs';
      returnTo = '';
      announce('Signed in.', 'ok');
      if (location.hash === to) route();
      else location.hash = to;
    },
  });
  signinMessage = '';
}

/** A 401 anywhere: forget the token and go back to sign-in with a message. */
setUnauthorizedHandler((err) => {
  if (!getToken()) return;
  setToken('');
  signinMessage = `Your token was not accepted (${err.message}). Sign in again.`;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* ignore */
    }
    cleanup = null;
  }
  showSignin(parseRoute().raw);
});

document.getElementById('signout').addEventListener('click', () => {
  setToken('');
  signinMessage = 'Signed out.';
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* ignore */
    }
    cleanup = null;
  }
  returnTo = '';
  showSignin('');
  announce('Signed out.');
});

async function refreshHealth() {
  try {
    const hl = await api('/health', { auth: false });
    const w = hl && hl.workers !== undefined ? hl.workers : '?';
    const q = hl && hl.queued !== undefined ? hl.queued : '?';
    healthEl.dataset.ok = hl && hl.status === 'ok' ? 'true' : 'false';
    healthEl.textContent = `${w} worker${w === 1 ? '' : 's'} · ${q} queued`;
    healthEl.title = `gppd ${hl && hl.version ? hl.version : ''} — ${hl && hl.status ? hl.status : 'unknown'}`;
  } catch {
    healthEl.dataset.ok = 'false';
    healthEl.textContent = 'daemon unreachable';
  }
}

/** Poll the header's worker and queue counts; every navigation reads them at once (a job just submitted counts). */
function startHealth() {
  refreshHealth();
  if (healthTimer) return;
  healthTimer = setInterval(() => {
    if (!document.hidden) refreshHealth();
  }, 5000);
}

function stopHealth() {
  clearInterval(healthTimer);
  healthTimer = 0;
  healthEl.textContent = '';
}

// The skip link moves focus to the content (a plain #main link would be
// taken for a route).
document.querySelector('.skip-link').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
route();
