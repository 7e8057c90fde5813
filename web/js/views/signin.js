// Sign-in: paste a token (the admin token from DATA_DIR/admin.token, or a
// user token issued by an admin).  It is checked against the API before it
// is kept in sessionStorage.

import { api, setToken, ApiError } from '../api.js';
import { h, replace, setBusy } from '../dom.js';

export const NAME = 'signin';

export function render(main, { message, onSignedIn }) {
  document.title = 'Sign in · gppd';
  const err = h('p.field-error#signin-error', { role: 'alert' });
  const input = h('input#token', {
    type: 'password',
    name: 'token',
    autocomplete: 'off',
    spellcheck: 'false',
    autocapitalize: 'off',
    required: true,
    'aria-describedby': 'token-hint signin-error',
  });
  const button = h('button.btn.btn-primary', { type: 'submit' }, 'Sign in');
  const form = h('form.signin-form', { novalidate: true, 'aria-labelledby': 'signin-title' },
    h('div.field',
      h('label', { for: 'token' }, 'Access token'),
      input,
      h('p.hint#token-hint', 'The admin token is in ', h('code', 'DATA_DIR/admin.token'),
        ' on the daemon host; an admin issues user tokens. It is kept in this tab only.')),
    err,
    h('div.actions', button));

  const showError = (text) => {
    err.textContent = text;
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showError('Enter a token.');
      input.focus();
      return;
    }
    showError('');
    setBusy(button, true);
    try {
      // Any authenticated read tells us whether the token is good.
      await api('/jobs', {
        query: { limit: 1 },
        headers: { Authorization: `Bearer ${token}` },
        auth: false,
        quiet401: true,
      });
      setToken(token);
      onSignedIn();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        showError(`That token was not accepted: ${e.message}`);
      } else if (e instanceof ApiError && e.status === 403) {
        showError(`That token may not use the dashboard: ${e.message}`);
      } else {
        showError(e && e.message ? e.message : String(e));
      }
      input.focus();
      input.select();
    } finally {
      setBusy(button, false);
    }
  });

  replace(main,
    h('section.signin', { 'aria-labelledby': 'signin-title' },
      h('h1#signin-title', { tabindex: '-1' }, 'Sign in to gppd'),
      h('p.lede', 'Grow-Push-Prune compression jobs: submit, watch and compare them.'),
      message ? h('p.notice#signin-message', { role: 'status' }, message) : null,
      form));
  input.focus();
}
