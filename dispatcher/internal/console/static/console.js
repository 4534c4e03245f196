// Kiln console: keeps relative times current and renders a build's live
// timeline from its event stream (SSE). Everything a build carries is
// attacker-controlled: it is written with textContent only, never as HTML,
// and invisible or direction-changing characters are shown as [U+XXXX]
// (as the server's Visible does).
'use strict';

(function () {
  const hiddenChars = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

  function visible(s) {
    if (s === null || s === undefined) return '';
    return String(s).replace(hiddenChars, (c) =>
      c === '\n' || c === '\t' ? c : '[U+' + c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + ']');
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = visible(text);
    return e;
  }

  // Relative times: <time datetime=... title=absolute>3 min ago</time>.
  function relative(t, now) {
    let d = (now - t) / 1000;
    const future = d < 0;
    d = Math.abs(d);
    let s;
    if (d < 10) return 'just now';
    if (d < 60) s = Math.floor(d) + ' s';
    else if (d < 3600) s = Math.floor(d / 60) + ' min';
    else if (d < 48 * 3600) s = Math.floor(d / 3600) + ' h';
    else s = Math.floor(d / 86400) + ' d';
    return future ? 'in ' + s : s + ' ago';
  }

  function refreshTimes() {
    const now = Date.now();
    for (const t of document.querySelectorAll('time.rel[datetime]')) {
      const at = Date.parse(t.getAttribute('datetime'));
      if (!Number.isNaN(at)) t.textContent = relative(at, now);
    }
  }

  function timeOf(iso) {
    const t = el('time', 'at');
    const at = Date.parse(iso);
    if (!Number.isNaN(at)) {
      t.setAttribute('datetime', new Date(at).toISOString());
      t.title = new Date(at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      t.textContent = new Date(at).toISOString().slice(11, 19);
    }
    return t;
  }

  function usd(v) {
    if (!v) return '$0';
    return v < 0.01 ? '$' + v.toFixed(4) : '$' + v.toFixed(2);
  }

  function pretty(input) {
    try {
      return JSON.stringify(JSON.parse(input), null, 2);
    } catch (e) {
      return input;
    }
  }

  // render returns the timeline entry of one event.
  function render(type, p, calls) {
    const li = el('li', 'ev ev-' + type);
    const kind = el('span', 'kind', type.replace('_', ' '));
    li.append(kind);
    const body = el('div', 'body');
    li.append(body);
    switch (type) {
      case 'agent_text':
        body.append(el('p', 'text', p.text));
        break;
      case 'tool_call': {
        kind.textContent = 'tool call';
        body.append(el('code', 'tool', p.name));
        if (p.input) {
          const d = el('details', 'input');
          d.append(el('summary', '', 'input'), el('pre', 'text', pretty(p.input)));
          d.open = p.input.length <= 400;
          body.append(d);
        }
        if (p.id) calls.set(p.id, li);
        break;
      }
      case 'tool_result': {
        kind.textContent = p.is_error ? 'tool error' : 'tool result';
        if (p.is_error) li.classList.add('is-error');
        const d = el('details', 'result');
        let what = p.size + ' bytes' + (p.truncated ? ', truncated' : '');
        const call = p.tool_use_id && calls.get(p.tool_use_id);
        if (call) what = call.querySelector('.tool').textContent + ' · ' + what;
        d.append(el('summary', '', what), el('pre', 'text', p.summary));
        body.append(d);
        break;
      }
      case 'permission_denied':
        li.classList.add('marked');
        kind.textContent = 'denied';
        body.append(el('span', 'mark denied', 'denied'), ' ', el('code', 'tool', p.tool), ' ', el('span', 'text', p.summary));
        if (p.reason) body.append(el('p', 'muted', p.reason));
        break;
      case 'agent_retry':
        li.classList.add('marked');
        kind.textContent = 'retry';
        body.append(el('span', 'mark retry', 'retry ' + p.attempt + '/' + p.max_retries),
          ' ', el('span', 'text', (p.status ? 'HTTP ' + p.status + ': ' : '') + (p.error || '') +
            ' — again in ' + Math.round(p.delay_ms / 100) / 10 + ' s'));
        break;
      case 'git': {
        const parts = [];
        if (p.committed) parts.push('committed ' + (p.commit_sha || '').slice(0, 12));
        else parts.push('nothing committed');
        if (p.pushed) parts.push('pushed' + (p.branch ? ' to ' + p.branch : ''));
        else if (p.branch) parts.push('branch ' + p.branch);
        if (p.kept) parts.push('work kept');
        body.append(el('p', 'text', parts.join(', ')));
        if (p.files_changed && p.files_changed.length) {
          const ul = el('ul', 'files');
          for (const f of p.files_changed) ul.append(el('li', '', f));
          body.append(ul);
        }
        if (p.error) body.append(el('p', 'error', p.error));
        break;
      }
      case 'usage':
        body.append(el('p', 'text', p.turns + ' turns · ' + p.input_tokens + ' in / ' + p.output_tokens +
          ' out tokens · ' + usd(p.cost_usd)));
        break;
      case 'status':
        body.append(el('span', 'status s-' + String(p.status).replace(/[^a-z]/g, ''), p.status));
        if (p.reason) body.append(' ', el('span', 'reason', p.reason));
        if (p.error) body.append(el('p', 'error', p.error));
        break;
      case 'log':
        if (p.level) li.classList.add('log-' + String(p.level).replace(/[^a-z]/g, ''));
        body.append(el('p', 'text', p.message || p.error || ''));
        break;
      case 'info':
        body.append(el('p', 'text', p.message));
        break;
      default:
        body.append(el('pre', 'text', JSON.stringify(p)));
    }
    return li;
  }

  const eventTypes = ['status', 'agent_text', 'tool_call', 'tool_result', 'usage', 'git', 'log', 'info',
    'agent_retry', 'permission_denied'];

  function follow(list) {
    const state = document.getElementById('stream-state');
    const say = (s) => { if (state) state.textContent = s; };
    const calls = new Map();
    let last = 0;
    let count = 0;
    const source = new EventSource(list.dataset.events);
    const onEvent = (ev) => {
      let e;
      try {
        e = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      if (typeof e.seq !== 'number' || e.seq <= last) return; // replayed after a reconnect
      last = e.seq;
      const li = render(e.type, e.payload || {}, calls);
      li.dataset.seq = String(e.seq);
      li.prepend(timeOf(e.time));
      list.append(li);
      count++;
      say('Live · ' + count + ' events');
      if (e.type === 'status' && e.payload) statusChanged(String(e.payload.status), e.time);
    };
    // The facts the page was rendered with follow the build's status.
    const statusChanged = (st, at) => {
      const s = document.querySelector('#build-status .status');
      if (s) {
        s.textContent = visible(st);
        s.className = 'status s-' + st.replace(/[^a-z]/g, '');
      }
      if (st === 'pending') return;
      const waiting = document.getElementById('waiting');
      if (waiting) {
        if (waiting.previousElementSibling) waiting.previousElementSibling.remove();
        waiting.remove();
      }
      const started = document.getElementById('started');
      if (st === 'running' && started && !started.querySelector('time')) {
        started.replaceChildren(timeOf(at));
      }
    };
    for (const t of eventTypes) source.addEventListener(t, onEvent);
    source.addEventListener('open', () => say('Live · ' + count + ' events'));
    source.addEventListener('end', (ev) => {
      source.close();
      let st = '';
      try { st = JSON.parse(ev.data).status; } catch (err) { /* keep it empty */ }
      say('The build ended' + (st ? ' ' + visible(st) : '') + ' · ' + count + ' events');
      list.dataset.ended = visible(st);
      if (list.dataset.status !== st && !document.getElementById('result') && st) {
        // The result is rendered by the server: show it.
        setTimeout(() => window.location.reload(), 500);
      }
    });
    source.addEventListener('dropped', () => say('Fell behind; catching up…'));
    source.addEventListener('unauthorized', () => {
      source.close();
      say('The session ended (signed out, expired or its token revoked). Sign in again to keep watching.');
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        say('The event stream closed. Reload the page to try again.');
      } else {
        say('Connection lost; reconnecting (from event ' + last + ')…');
      }
    });
  }

  function start() {
    refreshTimes();
    setInterval(refreshTimes, 30000);
    const list = document.getElementById('timeline');
    if (list && list.dataset.events) follow(list);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
