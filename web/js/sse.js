// Server-Sent Events over fetch().  EventSource cannot send an Authorization
// header, so the stream is read with a ReadableStream reader and parsed here
// (the text/event-stream rules of the HTML standard).  The last event id is
// kept and sent back as Last-Event-ID when the connection is re-opened, with
// exponential back-off (1 s doubling to 30 s, jittered; the server's
// `retry:` field sets the base).

import { authHeaders, errorFrom } from './api.js';

/**
 * Open a live stream.  handlers: {onevent(ev) where ev = {type, data, id}
 * (data is parsed JSON when it is JSON, else text), onstate(state, info)
 * with state 'connecting' | 'open' | 'retrying' | 'closed', onerror(apiError)
 * for an HTTP error that ends the stream (401, 403, 404)}.
 * Returns {close(), lastEventId()}.
 */
export function openEvents(url, handlers = {}, opts = {}) {
  let lastId = opts.lastEventId || '';
  let baseDelay = 1000;
  let delay = baseDelay;
  let closed = false;
  let controller = null;
  let timer = 0;

  const state = (s, info) => handlers.onstate && handlers.onstate(s, info);

  async function connect() {
    if (closed) return;
    controller = new AbortController();
    state('connecting');
    let res;
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (lastId) headers['Last-Event-ID'] = lastId;
      res = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
    } catch (e) {
      return retry(e);
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      // Client errors will not get better by retrying (404: no such job or no
      // events endpoint yet; 401/403: the token).  429/5xx are retried.
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
        closed = true;
        state('closed', err);
        if (handlers.onerror) handlers.onerror(err);
        return;
      }
      return retry(err);
    }
    const ctype = res.headers.get('Content-Type') || '';
    if (!ctype.startsWith('text/event-stream')) {
      closed = true;
      const err = new Error(`events endpoint answered ${ctype || 'no content type'}`);
      state('closed', err);
      if (handlers.onerror) handlers.onerror(err);
      return;
    }
    delay = baseDelay;
    state('open');
    try {
      await pump(res.body);
    } catch (e) {
      if (closed) return;
      return retry(e);
    }
    if (!closed) retry(new Error('stream ended'));
  }

  function retry(reason) {
    if (closed) return;
    const wait = Math.min(30000, delay) * (0.8 + Math.random() * 0.4);
    delay = Math.min(30000, delay * 2);
    state('retrying', { reason, wait });
    timer = setTimeout(connect, wait);
  }

  async function pump(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder('utf-8');
    let buf = '';
    let data = [];
    let type = '';
    let id = null;
    const dispatch = () => {
      if (id !== null) lastId = id;
      if (data.length) {
        const text = data.join('\n');
        let parsed = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          /* plain text event */
        }
        if (handlers.onevent) handlers.onevent({ type: type || 'message', data: parsed, id: lastId });
      }
      data = [];
      type = '';
      id = null;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        // A lone \r at the very end may be the first half of \r\n: wait.
        if (buf[nl] === '\r' && nl === buf.length - 1) break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          dispatch();
          continue;
        }
        if (line[0] === ':') continue; // comment / keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') type = val;
        else if (field === 'id') {
          if (!val.includes('\0')) id = val;
        } else if (field === 'retry' && /^\d+$/.test(val)) {
          baseDelay = Math.max(250, Number(val));
          delay = baseDelay;
        }
      }
      if (closed) {
        reader.cancel().catch(() => {});
        return;
      }
    }
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (controller) controller.abort();
      state('closed');
    },
    lastEventId: () => lastId,
  };
}
