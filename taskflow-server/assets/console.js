// taskflow web console: one ES module, no framework, no build step.
// Protocol: proto-docs/http-api.md. State comes from the WebSocket (/ws); nothing polls (the
// forecast comes in `forecast` frames; a past day's is fetched once).
// Test hooks: #board[data-seq][data-date][data-live], g[data-testid=task-node][data-task-id][data-status]
// [data-shard-<status>][data-at-risk], button[data-action], #connection[data-connection], #detail[data-task-id],
// #day-forecast[data-at-risk], g[data-testid=gantt-row][data-task-id][data-kind][data-at-risk].

const ACTIONS = ['execute', 'stop', 'skip', 'retry', 'rollback', 'confirm', 'mark_failed', 'hold', 'free', 'force_start'];
const ACTION_LABEL = { execute: 'Execute', stop: 'Stop', skip: 'Skip', retry: 'Retry', rollback: 'Roll back', confirm: 'Confirm', mark_failed: 'Mark failed', hold: 'Hold', free: 'Free', force_start: 'Force start' };
const ACTION_EXPLAIN = {
  execute: 'Start it now (its dependencies must be done).',
  stop: 'Cancel the running shards; they end as stopped.',
  skip: 'Treat it as done without running it; dependents may proceed.',
  retry: 'Run the failed or stopped shards again (a new attempt).',
  rollback: 'Undo what the shards wrote (the behavior’s rollback).',
  confirm: 'Accept the unconfirmed result as done.',
  mark_failed: 'Declare it failed (e.g. a hung or unconfirmed shard the operator knows is bad).',
  hold: 'Dispatch nothing of it until freed (running shards go on; also before it registers).',
  free: 'Lift the hold: what waits is dispatched again.',
  force_start: 'Register and run it now, whatever its dependencies and trigger (a reason is required).',
};
/** Actions the server refuses without a reason. */
const REASON_REQUIRED = new Set(['force_start']);
const TASK_STATUSES = ['unregistered', 'registered', 'pending', 'running', 'succeeded', 'failed', 'skipped',
  'not_applicable', 'stopping', 'stopped', 'rolling_back', 'rolled_back', 'unconfirmed'];
const SHARD_STATUSES = ['registered', 'pending', 'running', 'succeeded', 'failed', 'skipped', 'stopping', 'stopped',
  'rolling_back', 'rolled_back', 'rollback_failed', 'unconfirmed'];
// Order of the progress-bar segments: done first, then problems, then work in flight, then waiting.
const BAR_ORDER = ['succeeded', 'skipped', 'failed', 'rollback_failed', 'unconfirmed', 'running', 'stopping',
  'rolling_back', 'rolled_back', 'stopped', 'pending', 'registered'];
const COUNT_LABELS = [['failed', 'failed'], ['rollback_failed', 'rollback failed'], ['unconfirmed', 'unconfirmed'],
  ['running', 'running'], ['stopping', 'stopping'], ['rolling_back', 'rolling back'], ['rolled_back', 'rolled back'],
  ['stopped', 'stopped'], ['pending', 'pending'], ['registered', 'registered']];
const DONE = new Set(['succeeded', 'skipped', 'not_applicable']);
const NODE_W = 258, NODE_H = 82, BAR_W = NODE_W - 28;
const PAGE = 50, LOG_CAP = 2000, AUDIT_CAP = 500, EVENTS_CAP = 500;
const TOKEN_KEY = 'taskflow.token';
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const label = (status) => String(status ?? '').replaceAll('_', ' ');

// ---------------------------------------------------------------- state

const S = {
  live: { board: null, seq: 0, executors: [], executorsAt: null },
  view: null,               // null: the live current day; else {date, board} loaded once via GET
  viewingProtected: false,  // a GET answered 401: send the token on GETs and on /ws
  conn: 'connecting',
  pendingSeq: 0,            // an action was accepted at this seq; buttons wait until the page reaches it
  audit: new Map(),         // seq → entry
  events: [],               // client-side status changes seen from task frames
  selected: null,           // task id shown in the detail panel
  detail: { filter: new Set(), offset: 0, total: 0, shards: [], reqId: 0, inflight: null, loaded: false, error: null },
  log: null,                // {taskId, index, key, lines, pending, loading, truncated, error}
  layoutKey: '',
  nodes: new Map(),         // task id → node DOM refs
  edges: [],                // {from, to, el}
  forecast: null,           // the last GET …/forecast answer of the shown day
};
const FORECAST_EVERY_MS = 2000;
const board = () => (S.view ? S.view.board : S.live.board);
const isLive = () => !S.view;
const shownSeq = () => (S.view ? S.view.board?.seq ?? 0 : S.live.seq);
const taskRow = (id) => board()?.tasks.find((t) => t.id === id) ?? null;

// ---------------------------------------------------------------- token + HTTP

function initToken() {
  const url = new URL(location.href);
  if (url.searchParams.has('token')) {
    const t = url.searchParams.get('token');
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    url.searchParams.delete('token');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }
}
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (token() && (method !== 'GET' || S.viewingProtected)) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (res.ok) return data;
  if (res.status === 401 && method === 'GET' && !S.viewingProtected) {
    S.viewingProtected = true;  // viewing is token-protected on this server
    if (token()) return api(method, path, body);
  }
  throw new ApiError(res.status, data?.error ?? `http_${res.status}`, data?.message ?? `${res.status} ${res.statusText}`);
}
const enc = encodeURIComponent;
const dayPath = (date) => `/api/days/${enc(date)}`;

// ---------------------------------------------------------------- WebSocket

let ws = null, attempts = 0, reconnectTimer = null, heartbeat = null, lastMessageAt = 0;

function connect(fresh = false) {
  clearTimeout(reconnectTimer);
  if (ws) { const old = ws; ws = null; try { old.close(); } catch { /* closed */ } }
  const url = new URL('/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (!fresh && S.live.board) url.searchParams.set('since', String(S.live.seq));
  if (S.viewingProtected && token()) url.searchParams.set('token', token());
  setConn(attempts === 0 && !S.live.board ? 'connecting' : 'reconnecting');
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    if (sock !== ws) return;
    attempts = 0;
    lastMessageAt = Date.now();
    setConn('connected');
    startHeartbeat(sock);
    // Subscriptions are per connection, and shard/log frames missed while away are not replayed.
    if (S.selected && isLive()) { subscribe([S.selected]); loadShards(); if (S.log) loadLog(); }
  };
  sock.onmessage = (ev) => {
    if (sock !== ws) return;
    lastMessageAt = Date.now();
    let frame;
    try { frame = JSON.parse(ev.data); } catch { console.warn('taskflow: unparsable frame', ev.data); return; }
    handleFrame(frame);
  };
  sock.onclose = () => {
    if (sock !== ws) return;
    ws = null;
    stopHeartbeat();
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  attempts += 1;
  const base = Math.min(15000, 500 * 2 ** Math.min(attempts - 1, 5));
  const delay = Math.round(base / 2 + Math.random() * base / 2);
  setConn(navigator.onLine === false || attempts > 4 ? 'offline' : 'reconnecting', delay);
  reconnectTimer = setTimeout(() => connect(), delay);
}

// An application-level heartbeat: browsers expose no WebSocket ping, and a half-open TCP
// connection would otherwise look "connected" forever while the page silently goes stale.
function startHeartbeat(sock) {
  stopHeartbeat();
  heartbeat = setInterval(() => {
    if (sock !== ws) return stopHeartbeat();
    if (Date.now() - lastMessageAt > 35000) { sock.close(); return; }
    if (Date.now() - lastMessageAt > 20000) send({ type: 'ping' });
  }, 5000);
}
function stopHeartbeat() { clearInterval(heartbeat); heartbeat = null; }

function send(frame) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}
const subscribe = (tasks) => send({ type: 'subscribe', tasks });
const unsubscribe = (tasks) => send({ type: 'unsubscribe', tasks });

function setConn(state, retryMs) {
  S.conn = state;
  const el = $('connection');
  el.dataset.connection = state;
  const text = { connecting: 'connecting…', connected: 'live', reconnecting: 'reconnecting…', offline: 'offline' }[state];
  el.querySelector('.label').textContent = retryMs && state !== 'connected'
    ? `${text} (retry in ${Math.ceil(retryMs / 1000)} s)` : text;
  el.title = state === 'connected' ? 'Receiving live updates over the WebSocket'
    : `Not receiving updates: the page shows the state as of seq ${S.live.seq}`;
  $('reconnect-now').hidden = state === 'connected' || state === 'connecting';
  schedule();
}

window.addEventListener('online', () => { if (!ws || ws.readyState !== WebSocket.OPEN) { attempts = 0; connect(); } });
window.addEventListener('offline', () => { if (S.conn !== 'connected') setConn('offline'); });

// ---------------------------------------------------------------- frames

function handleFrame(f) {
  const live = S.live;
  const stale = typeof f.seq === 'number' && f.seq < live.seq;
  switch (f.type) {
    case 'snapshot': {
      live.board = f.board;
      live.seq = f.seq ?? f.board?.seq ?? 0;
      live.board.seq = live.seq;
      if (S.pendingSeq > live.seq) S.pendingSeq = 0;  // a different server history; do not block forever
      live.executors = f.executors ?? [];
      live.executorsAt = new Date();
      if (isLive() && S.selected) {
        if (!taskRow(S.selected)) closeDetail(); else loadShards();
      }
      if (isLive()) $('date-picker').value = live.board.date;
      loadAudit();  // audit frames may have been missed if the server had to send a snapshot
      break;
    }
    case 'task': {
      if (!live.board || stale) return;
      const tasks = live.board.tasks;
      const i = tasks.findIndex((t) => t.id === f.task.id);
      const before = i >= 0 ? tasks[i].status : null;
      if (i >= 0) tasks[i] = f.task; else tasks.push(f.task);
      if (before !== f.task.status) {
        S.events.unshift({ seq: f.seq, at: new Date(), task: f.task.id, from: before, to: f.task.status });
        S.events.length = Math.min(S.events.length, EVENTS_CAP);
      }
      break;
    }
    case 'shard': {
      if (!live.board || stale) return;
      if (isLive() && f.task_id === S.selected) applyShard(f.shard, f.seq);
      break;
    }
    case 'forecast':
      if (!live.board || !f.forecast || f.forecast.date !== live.board.date) return;
      if (isLive()) S.forecast = f.forecast;
      break;
    case 'resources':
      if (!live.board || stale) return;
      live.board.resources = f.resources ?? [];
      break;
    case 'executors':
      if (stale) return;
      live.executors = f.executors ?? [];
      live.executorsAt = new Date();
      break;
    case 'audit':
      if (f.entry) addAudit([f.entry]);
      break;
    case 'log': {
      const idx = typeof f.shard === 'object' && f.shard !== null ? f.shard.index : f.shard;
      const lg = S.log;
      if (lg && isLive() && lg.taskId === f.task_id && lg.index === idx && f.line) {
        (lg.loading ? lg.pending : lg.lines).push(f.line);
        if (lg.lines.length > LOG_CAP) lg.lines.splice(0, lg.lines.length - LOG_CAP);
      }
      break;
    }
    case 'day': {
      if (!live.board) return;
      if (f.date !== live.board.date) {
        // Rolled over: our rows belong to the previous day. Start over with a fresh snapshot.
        toast(`Business day ${f.date} opened`);
        live.board = null;
        live.seq = 0;
        if (isLive()) closeDetail();
        connect(true);
        return;
      }
      live.board.closed = !!f.closed;
      break;
    }
    case 'error':
      console.warn('taskflow: server says', f.message);
      return;
    case 'pong':
      return;
    default:
      return;
  }
  if (typeof f.seq === 'number' && f.seq > live.seq) live.seq = f.seq;
  if (live.board) live.board.seq = live.seq;
  schedule();
}

function applyShard(shard, seq) {
  const d = S.detail;
  if (d.inflight) d.inflight.set(shard.index, { seq, shard });
  const i = d.shards.findIndex((s) => s.index === shard.index);
  if (i >= 0) d.shards[i] = shard;
}

// ---------------------------------------------------------------- loading

async function loadAudit() {
  try {
    const r = await api('GET', '/api/audit?limit=200');
    addAudit(r?.entries ?? []);
  } catch (e) {
    if (e.status !== 0) console.warn('taskflow: audit', e.message);
  }
}

function addAudit(entries) {
  for (const e of entries) S.audit.set(e.seq, e);
  if (S.audit.size > AUDIT_CAP) {
    const keep = [...S.audit.keys()].sort((a, b) => b - a).slice(0, AUDIT_CAP);
    const keepSet = new Set(keep);
    for (const k of [...S.audit.keys()]) if (!keepSet.has(k)) S.audit.delete(k);
  }
  schedule();
}

async function loadShards() {
  const d = S.detail, id = S.selected, b = board();
  if (!id || !b) return;
  const req = ++d.reqId;
  d.inflight = new Map();  // shard frames that arrive while the page is being fetched win over it
  const qs = new URLSearchParams();
  for (const s of d.filter) qs.append('status', s);
  qs.set('offset', String(d.offset));
  qs.set('limit', String(PAGE));
  try {
    const r = await api('GET', `${dayPath(b.date)}/tasks/${enc(id)}?${qs}`);
    if (req !== d.reqId || id !== S.selected) return;
    const newer = d.inflight;
    d.inflight = null;
    d.total = r.total ?? 0;
    d.shards = (r.shards ?? []).map((s) => {
      const f = newer.get(s.index);
      return f && !(typeof r.seq === 'number' && r.seq >= f.seq) ? f.shard : s;
    });
    d.loaded = true;
    d.error = null;
    if (!isLive() && r.task) {  // a fixed view: the fresher row is fine to show
      const tasks = S.view.board.tasks;
      const i = tasks.findIndex((t) => t.id === id);
      if (i >= 0) tasks[i] = r.task;
    }
  } catch (e) {
    if (req !== d.reqId) return;
    d.inflight = null;
    d.error = e.message;
  }
  schedule();
}

async function loadLog() {
  const lg = S.log, b = board();
  if (!lg || !b) return;
  lg.loading = true;
  lg.pending = [];
  lg.error = null;
  schedule();
  try {
    const r = await api('GET', `${dayPath(b.date)}/tasks/${enc(lg.taskId)}/shards/${lg.index}/logs`);
    if (S.log !== lg) return;
    const lines = r?.lines ?? [];
    const seen = new Set(lines.map(lineKey));
    lg.lines = lines.concat(lg.pending.filter((l) => !seen.has(lineKey(l)))).slice(-LOG_CAP);
    lg.truncated = !!r?.truncated;
  } catch (e) {
    if (S.log !== lg) return;
    lg.error = e.message;
    lg.lines = lg.pending;
  }
  lg.pending = [];
  lg.loading = false;
  schedule();
}
const lineKey = (l) => `${l.at}|${l.attempt}|${l.level}|${l.line}`;

async function showDate(date) {
  const live = S.live.board;
  if (!date || (live && date === live.date)) return backToLive();
  try {
    const b = await api('GET', dayPath(date));
    closeDetail();
    S.view = { date, board: b };
    schedule();
    loadForecast();
  } catch (e) {
    toast(e.status === 404 ? `No business day ${date} on this server` : `Cannot load ${date}: ${e.message}`, 'error');
    $('date-picker').value = board()?.date ?? '';
  }
}

function backToLive() {
  const wasView = !!S.view;
  S.view = null;
  if (wasView) closeDetail();
  if (S.live.board) $('date-picker').value = S.live.board.date;
  schedule();
  loadForecast();
}

async function reloadView() {
  if (!S.view) return;
  try {
    S.view.board = await api('GET', dayPath(S.view.date));
    if (S.selected) loadShards();
    schedule();
  } catch (e) { toast(`Cannot reload ${S.view.date}: ${e.message}`, 'error'); }
}

// ---------------------------------------------------------------- selection

function select(id) {
  if (S.selected === id) return;
  if (S.selected && isLive()) unsubscribe([S.selected]);
  S.selected = id;
  S.detail = { filter: new Set(), offset: 0, total: 0, shards: [], reqId: S.detail.reqId + 1, inflight: null, loaded: false, error: null };
  S.log = null;
  if (isLive()) subscribe([id]);
  loadShards();
  schedule();
}

function closeDetail() {
  if (S.selected && isLive()) unsubscribe([S.selected]);
  S.selected = null;
  S.log = null;
  S.detail.reqId += 1;
  schedule();
}

function openLog(shard) {
  if (S.log && S.log.index === shard.index && S.log.taskId === S.selected) { S.log = null; schedule(); return; }
  S.log = { taskId: S.selected, index: shard.index, key: shard.key, lines: [], pending: [], loading: true, truncated: false, error: null };
  loadLog();
}

// ---------------------------------------------------------------- actions

/** Why the action buttons are disabled right now, or '' if they may be used. */
function actionsBlocked() {
  if (isLive()) {
    if (S.conn !== 'connected') return 'Not connected: the allowed actions shown may be stale.';
    if (S.live.seq < S.pendingSeq) return `Waiting for seq ${S.pendingSeq} (the last action) to arrive…`;
  }
  return '';
}

let pendingAction = null;

function askAction(action, taskId, shard) {
  const b = board();
  pendingAction = { action, taskId, shard, date: b.date };
  const target = shard ? `${taskId} · shard ${shard.key} (#${shard.index})` : `task ${taskId}${S.view ? ` on ${b.date}` : ''}`;
  $('a-title').textContent = `${ACTION_LABEL[action]} ${target}`;
  $('a-explain').textContent = ACTION_EXPLAIN[action];
  $('a-reason').value = '';
  $('a-cascade').checked = false;
  $('a-cascade-row').hidden = action !== 'rollback';
  $('a-error').hidden = true;
  $('a-confirm').disabled = false;
  $('a-confirm').textContent = ACTION_LABEL[action];
  $('action-dialog').dataset.action = action;
  $('action-dialog').showModal();
  $('a-reason').focus();
}

async function submitAction() {
  const p = pendingAction;
  if (!p) return;
  const body = {};
  const reason = $('a-reason').value.trim();
  if (!reason && REASON_REQUIRED.has(p.action)) {
    showActionError(`${ACTION_LABEL[p.action]} needs a reason: say why, for the audit log.`, 'reason_required');
    $('a-reason').focus();
    return;
  }
  if (reason) body.reason = reason;
  if (p.action === 'rollback') body.cascade = $('a-cascade').checked;
  const path = p.shard
    ? `${dayPath(p.date)}/tasks/${enc(p.taskId)}/shards/${p.shard.index}/${p.action}`
    : `${dayPath(p.date)}/tasks/${enc(p.taskId)}/${p.action}`;
  $('a-confirm').disabled = true;
  $('a-confirm').textContent = 'Sending…';
  $('a-error').hidden = true;
  try {
    const r = await api('POST', path, body);
    $('action-dialog').close();
    pendingAction = null;
    if (typeof r?.seq === 'number') S.pendingSeq = Math.max(S.pendingSeq, r.seq);
    toast(`${ACTION_LABEL[p.action]} accepted${typeof r?.seq === 'number' ? ` (seq ${r.seq})` : ''}`);
    if (S.view && S.view.date === p.date) reloadView();
    schedule();
  } catch (e) {
    $('a-confirm').disabled = false;
    $('a-confirm').textContent = ACTION_LABEL[p.action];
    if (e.status === 401) {
      const ok = await askToken(token() ? 'The server refused the token. Enter the operator token:' : 'This action needs the operator token:');
      if (ok) return submitAction();
      showActionError('Not sent: no operator token.');
    } else if (e.status === 409) {
      showActionError(`Refused by the state machine: ${e.message}`, e.code);
    } else {
      showActionError(e.message, e.code);
    }
  }
}

function showActionError(message, code) {
  const el = $('a-error');
  el.textContent = message;
  el.dataset.code = code ?? '';
  el.hidden = false;
}

let tokenResolve = null;
function askToken(explain) {
  $('t-explain').textContent = explain || 'Actions need the token printed in the console URL when the server started.';
  $('t-input').value = '';
  $('token-dialog').showModal();
  $('t-input').focus();
  return new Promise((resolve) => { tokenResolve = resolve; });
}
function finishToken(ok) {
  const value = $('t-input').value.trim();
  if (ok && value) sessionStorage.setItem(TOKEN_KEY, value);
  $('token-dialog').close();
  const r = tokenResolve;
  tokenResolve = null;
  if (r) r(ok && !!value);
  if (ok && value && S.viewingProtected && ws) connect();
}

// ---------------------------------------------------------------- rendering (batched)

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(flush);
  setTimeout(flush, 60);  // in case frames are throttled (hidden tab)
}
function flush() {
  if (!scheduled) return;
  scheduled = false;
  try { render(); } catch (e) { console.error('taskflow: render failed', e); }
}

function render() {
  const b = board();
  renderHeader(b);
  renderForecastHeader(b);
  renderGraph(b);
  renderGantt(b);
  renderDetail();
  renderExecutors();
  renderResources(b);
  renderEntries();
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}
/** Rebuilds el's children only when `sig` changed, so that elements under the pointer survive
 *  frames that did not change them (a click needs the same element under mousedown and mouseup). */
function patch(el, sig, build) {
  if (el._sig === sig) return;
  el._sig = sig;
  el.replaceChildren(...build());
}

function s(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** `waiting_for` of a row as a short sentence ("waits for reconciliation", "held by alice"). */
function waitingText(w) {
  if (!w) return null;
  switch (w.kind) {
    case 'dependency': return `waits for ${w.task}`;
    case 'operator': return 'waits for an operator';
    case 'trigger': return `trigger at ${fmtTime(w.at)}`;
    case 'retry': return `retry at ${fmtTime(w.at)}`;
    case 'slot': return `waits for a free ${w.behavior} slot`;
    case 'resource': return `waits for a free ${w.resource} unit`;
    case 'held': return `held by ${w.by}`;
    default: return w.kind;
  }
}

function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}
function fmtDuration(a, b) {
  if (!a || !b) return '';
  let ms = new Date(b) - new Date(a);
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${ms} ms`;
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} m ${sec % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} m`;
}

function renderHeader(b) {
  const boardEl = $('board');
  boardEl.dataset.seq = b ? String(shownSeq()) : '';
  boardEl.dataset.date = b?.date ?? '';
  boardEl.dataset.live = String(isLive());
  const stale = isLive() && S.conn !== 'connected' && !!b;
  boardEl.classList.toggle('stale', stale);
  document.body.classList.toggle('stale', stale);
  $('seq').textContent = b ? `seq ${shownSeq()}` : 'seq –';
  $('flow-name').textContent = b?.flow ?? '';
  if (b && document.activeElement !== $('date-picker') && !$('date-picker').value) $('date-picker').value = b.date;
  $('date-live').hidden = isLive();
  const ds = $('day-state');
  ds.textContent = !b ? '' : `${b.closed ? 'closed' : 'open'}${isLive() ? '' : ' · fixed view'}`;
  ds.dataset.closed = String(!!b?.closed);

  const banner = $('banner');
  const lost = !!b && isLive() && S.conn !== 'connected' && S.conn !== 'connecting';
  banner.hidden = !S.view && !lost;
  banner.dataset.kind = S.view ? 'view' : 'stale';
  patch(banner, JSON.stringify([S.view?.date, S.view?.board.seq, S.live.board?.date, lost && S.live.seq]), () => (S.view ? [
    `Showing ${S.view.date} as of seq ${S.view.board.seq} — a fixed view, not live (the live updates are for the current day ${S.live.board?.date ?? ''}). `,
    h('button', { type: 'button', class: 'linklike', onclick: reloadView, text: 'Reload' }), ' ',
    h('button', { type: 'button', class: 'linklike', onclick: backToLive, text: 'Back to the current day' }),
  ] : lost ? [`Connection lost — showing the state as of seq ${S.live.seq}; reconnecting by itself.`] : []));

  const counts = {};
  for (const t of b?.tasks ?? []) counts[t.status] = (counts[t.status] ?? 0) + 1;
  const summary = $('summary');
  patch(summary, JSON.stringify([b?.tasks.length, counts]), () => [...(b ? [h('span', { class: 'total', text: `${b.tasks.length} tasks` })] : []),
    ...TASK_STATUSES.filter((st) => counts[st]).map((st) =>
      h('span', { class: `chip st-${st}`, 'data-status': st, 'data-count': counts[st] },
        h('i', { class: 'swatch', 'aria-hidden': 'true' }), `${counts[st]} ${label(st)}`))]);
  const failed = (counts.failed ?? 0);
  document.title = `${failed ? `⚠ ${failed} failed · ` : ''}taskflow${b ? ` ${b.date}` : ''}`;
}

// ---- graph

function renderGraph(b) {
  const host = $('board');
  $('board-empty').hidden = !!b;
  if (!b) {
    host.querySelector('svg')?.remove();
    S.layoutKey = '';
    S.nodes.clear();
    return;
  }
  const key = b.tasks.map((t) => `${t.id}<${(t.depends_on ?? []).join(',')}`).join(';');
  if (key !== S.layoutKey) {
    if (!window.dagre) { $('board-empty').hidden = false; $('board-empty').textContent = 'Loading the layout library…'; return; }
    buildGraph(b);
    S.layoutKey = key;
  }
  for (const t of b.tasks) updateNode(t);
  const byId = new Map(b.tasks.map((t) => [t.id, t]));
  for (const e of S.edges) {
    const from = byId.get(e.from);
    e.el.classList.toggle('done', !!from && DONE.has(from.status));
    e.el.classList.toggle('selected', e.to === S.selected || e.from === S.selected);
  }
}

function buildGraph(b) {
  const g = new window.dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 20, ranksep: 40, edgesep: 12, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(b.tasks.map((t) => t.id));
  for (const t of b.tasks) g.setNode(t.id, { width: NODE_W, height: NODE_H });
  for (const t of b.tasks) for (const d of t.depends_on ?? []) if (ids.has(d)) g.setEdge(d, t.id);
  window.dagre.layout(g);
  const { width, height } = g.graph();

  const svg = s('svg', { viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, class: 'dag', role: 'group', 'aria-label': 'Task dependency graph', 'data-testid': 'graph' });
  svg.style.maxWidth = `${Math.ceil(width)}px`;
  const defs = s('defs');
  const marker = s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' });
  marker.append(s('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }));
  defs.append(marker);
  svg.append(defs);
  const edgeLayer = s('g', { class: 'edges' });
  const nodeLayer = s('g', { class: 'nodes' });
  svg.append(edgeLayer, nodeLayer);

  S.edges = [];
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    let d = `M ${pts[0].x} ${pts[0].y}`;
    for (let i = 1; i < pts.length - 1; i++) {
      const mx = (pts[i].x + pts[i + 1].x) / 2, my = (pts[i].y + pts[i + 1].y) / 2;
      d += ` Q ${pts[i].x} ${pts[i].y} ${i === pts.length - 2 ? pts[i + 1].x : mx} ${i === pts.length - 2 ? pts[i + 1].y : my}`;
    }
    if (pts.length === 2) d += ` L ${pts[1].x} ${pts[1].y}`;
    const path = s('path', { d, class: 'edge', 'marker-end': 'url(#arrow)', 'data-from': e.v, 'data-to': e.w });
    edgeLayer.append(path);
    S.edges.push({ from: e.v, to: e.w, el: path });
  }

  S.nodes.clear();
  for (const t of b.tasks) {
    const n = g.node(t.id);
    const grp = s('g', {
      class: 'node', transform: `translate(${n.x - NODE_W / 2} ${n.y - NODE_H / 2})`, tabindex: '0', role: 'button',
      'data-testid': 'task-node', 'data-task-id': t.id, id: `task-${t.id}`,
    });
    const title = s('title');
    const bg = s('rect', { class: 'node-bg', width: NODE_W, height: NODE_H, rx: 8 });
    const stripe = s('rect', { class: 'node-stripe', width: 5, height: NODE_H - 2, x: 1, y: 1, rx: 3 });
    const name = s('text', { class: 'node-name', x: 14, y: 20 });
    const idText = s('text', { class: 'node-id', x: 14, y: 37 });
    const status = s('text', { class: 'node-status', x: NODE_W - 10, y: 37, 'text-anchor': 'end', 'data-testid': 'task-status' });
    const bar = s('g', { class: 'node-bar', transform: 'translate(14 46)' });
    const counts = s('text', { class: 'node-counts', x: 14, y: 72 });
    const countsRight = s('text', { class: 'node-counts problems', x: NODE_W - 10, y: 72, 'text-anchor': 'end' });
    const risk = s('text', { class: 'node-risk risk', x: NODE_W - 10, y: 20, 'text-anchor': 'end', 'data-testid': 'at-risk' });
    grp.append(title, bg, stripe, name, idText, status, bar, counts, countsRight, risk);
    grp.addEventListener('click', () => select(t.id));
    grp.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(t.id); } });
    nodeLayer.append(grp);
    S.nodes.set(t.id, { grp, title, name, idText, status, bar, counts, countsRight, risk, last: '' });
  }
  $('board').querySelector('svg')?.remove();
  $('board').append(svg);
  for (const t of b.tasks) fitText(S.nodes.get(t.id).name, t.name ?? t.id, NODE_W - 24 - 62);
}

/** Sets an SVG text's content, trimmed with an ellipsis to fit `max` pixels. */
function fitText(el, text, max) {
  el.textContent = text;
  if (!el.isConnected || el.getComputedTextLength() <= max) return;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    el.textContent = `${text.slice(0, mid)}…`;
    if (el.getComputedTextLength() <= max) lo = mid; else hi = mid - 1;
  }
  el.textContent = `${text.slice(0, lo)}…`;
}

function updateNode(t) {
  const n = S.nodes.get(t.id);
  if (!n) return;
  const sh = t.shards ?? {};
  const total = sh.total ?? 0;
  const fc = forecastOf(t);
  const sig = JSON.stringify([t.status, sh, t.name, S.selected === t.id, t.not_applicable, t.held_by, t.waiting_for, fc]);
  if (sig === n.last) return;
  n.last = sig;
  const g = n.grp;
  g.setAttribute('class', `node st-${t.status}${S.selected === t.id ? ' selected' : ''}${t.held_by ? ' held' : ''}${fc.at_risk ? ' at-risk' : ''}`);
  g.dataset.status = t.status;
  g.dataset.atRisk = String(!!fc.at_risk);
  if (fc.predicted_end) g.dataset.predictedEnd = fc.predicted_end; else delete g.dataset.predictedEnd;
  if (t.held_by) g.dataset.heldBy = t.held_by; else delete g.dataset.heldBy;
  if (t.waiting_for) g.dataset.waiting = t.waiting_for.kind; else delete g.dataset.waiting;
  g.dataset.shardTotal = String(total);
  for (const st of SHARD_STATUSES) g.dataset[`shard${st.split('_').map((w) => w[0].toUpperCase() + w.slice(1)).join('')}`] = String(sh[st] ?? 0);
  g.setAttribute('aria-label', `${t.name ?? t.id}: ${label(t.status)}, ${sh.succeeded ?? 0} of ${total} shards succeeded`);
  g.setAttribute('aria-pressed', String(S.selected === t.id));
  n.status.textContent = `${t.held_by ? 'HELD · ' : ''}${label(t.status).toUpperCase()}`;
  n.risk.textContent = fc.at_risk ? '⚠ at risk' : '';
  fitText(n.idText, t.id, NODE_W - 24 - n.status.getComputedTextLength() - 8);
  n.title.textContent = `${t.name ?? t.id}\n${t.id} · ${label(t.status)}${t.held_by ? ` · held by ${t.held_by}` : ''}\n` +
    (total ? SHARD_STATUSES.filter((st) => sh[st]).map((st) => `${sh[st]} ${label(st)}`).join(', ') + ` of ${total} shards` : 'no shards registered') +
    (t.waiting_for ? `\n${waitingText(t.waiting_for)}` : '') + `\n${forecastText(fc)}`;

  n.bar.replaceChildren(s('rect', { class: 'bar-bg', width: BAR_W, height: 7, rx: 3.5 }));
  if (total > 0) {
    let x = 0;
    for (const st of BAR_ORDER) {
      const c = sh[st] ?? 0;
      if (!c) continue;
      const w = (c / total) * BAR_W;
      n.bar.append(s('rect', { class: `seg seg-${st}`, x: x.toFixed(2), width: Math.max(w, 1.5).toFixed(2), height: 7 }));
      x += w;
    }
    const clip = s('rect', { class: 'bar-frame', width: BAR_W, height: 7, rx: 3.5 });
    n.bar.append(clip);
  }
  const done = (sh.succeeded ?? 0) + (sh.skipped ?? 0);
  n.counts.textContent = total ? `${done}/${total} done` : (t.status === 'not_applicable' ? 'not applicable today' : 'no shards yet');
  const problems = COUNT_LABELS.filter(([k]) => sh[k]).map(([k, l]) => `${sh[k]} ${l}`).join(' · ');
  const ends = !DONE.has(t.status) && fc.predicted_end ? `${fc.at_risk ? '⚠ ' : ''}ends ~${fmtTime(fc.predicted_end)}` : '';
  fitText(n.countsRight, problems || ends, NODE_W - 24 - n.counts.getComputedTextLength() - 8);
  n.countsRight.classList.toggle('risk', !problems && !!fc.at_risk);
}

// ---- detail

function renderDetail() {
  const panel = $('detail');
  const t = S.selected ? taskRow(S.selected) : null;
  if (!t) { panel.hidden = true; delete panel.dataset.taskId; return; }
  panel.hidden = false;
  panel.dataset.taskId = t.id;
  panel.dataset.status = t.status;
  $('d-name').textContent = t.name ?? t.id;
  const badge = $('d-status');
  badge.textContent = label(t.status);
  badge.className = `badge st-${t.status}`;
  badge.dataset.status = t.status;

  const f = [
    ['id', t.id], ['level', t.level], ['trigger', t.trigger], ['behavior', t.behavior],
    ['depends on', (t.depends_on ?? []).join(', ') || '—'], ['attempts', String(t.attempts ?? 0)],
    ['held', t.held_by ? `by ${t.held_by}` : (t.held_shards ? `${t.held_shards} shard(s)` : '—')],
    ['force-started', t.forced ? 'yes' : '—'],
    ['waiting for', waitingText(t.waiting_for) ?? '—'],
    ['registered', fmtTime(t.registered_at), t.registered_at], ['started', fmtTime(t.started_at), t.started_at],
    ['finished', `${fmtTime(t.finished_at)}${t.finished_at ? ` (${fmtDuration(t.started_at, t.finished_at)})` : ''}`, t.finished_at],
  ];
  const fc = forecastOf(t);
  f.push(['deadline', fc.deadline ? fmtTime(fc.deadline) : '—', fc.deadline],
    ['predicted start', fmtTime(fc.predicted_start), fc.predicted_start],
    ['predicted end', `${fmtTime(fc.predicted_end)}${fc.low_confidence ? ' (low confidence: no history)' : ''}${fc.note ? ` — ${fc.note}` : ''}`, fc.predicted_end],
    ['at risk', fc.at_risk ? 'yes: ends after its deadline' : '—']);
  patch($('d-fields'), JSON.stringify(f), () => f.flatMap(([k, v, iso]) => [h('dt', { text: k }), h('dd', { text: v ?? '—', title: iso ?? null, 'data-field': k })]));

  const blocked = actionsBlocked();
  const allowed = new Set(t.allowed_actions ?? []);
  const box = $('d-actions');
  if (!box.children.length) {
    box.append(...ACTIONS.map((a) => h('button', {
      type: 'button', class: `act act-${a}`, 'data-action': a, disabled: true, text: ACTION_LABEL[a],
      onclick: () => { if (S.selected) askAction(a, S.selected, null); },
    })));
  }
  for (const btn of box.children) {
    const a = btn.dataset.action;
    btn.disabled = !allowed.has(a) || !!blocked;
    btn.title = blocked || (allowed.has(a) ? ACTION_EXPLAIN[a] : `Not allowed now (the task is ${label(t.status)})`);
  }
  $('d-hint').textContent = blocked;

  const d = S.detail;
  const sh = t.shards ?? {};
  $('d-total').textContent = d.filter.size ? `${d.total} matching of ${sh.total ?? 0}` : `${sh.total ?? 0}`;
  patch($('d-filter'), JSON.stringify([t.id, sh, [...d.filter]]), () => [
    h('button', { type: 'button', class: `chip${d.filter.size ? '' : ' on'}`, 'aria-pressed': String(!d.filter.size), 'data-filter': 'all', text: 'all', onclick: () => setFilter(null) }),
    ...SHARD_STATUSES.filter((st) => sh[st] || d.filter.has(st)).map((st) => h('button', {
      type: 'button', class: `chip st-${st}${d.filter.has(st) ? ' on' : ''}`, 'aria-pressed': String(d.filter.has(st)),
      'data-filter': st, onclick: () => setFilter(st),
    }, h('i', { class: 'swatch', 'aria-hidden': 'true' }), `${label(st)} ${sh[st] ?? 0}`))]);

  const body = $('d-shards').tBodies[0];
  if (d.error) body.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'error', text: d.error })));
  else if (!d.loaded) body.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'muted', text: 'loading…' })));
  else if (!d.shards.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'muted', text: 'no shards' })));
  else {
    body._rows ??= new Map();
    const rows = d.shards.map((sd) => {
      const sig = JSON.stringify([t.id, sd, blocked, S.log?.index === sd.index]);
      const old = body._rows.get(sd.index);
      if (old && old._sig === sig) return old;
      const tr = shardRow(t, sd, blocked);
      tr._sig = sig;
      if (old && old.parentNode === body) old.replaceWith(tr);
      body._rows.set(sd.index, tr);
      return tr;
    });
    const same = rows.length === body.children.length && rows.every((r, i) => body.children[i] === r);
    if (!same) {
      body.replaceChildren(...rows);
      for (const k of [...body._rows.keys()]) if (!rows.includes(body._rows.get(k))) body._rows.delete(k);
    }
  }
  if (d.error || !d.loaded || !d.shards.length) body._rows = new Map();
  $('d-range').textContent = d.total ? `${d.offset + 1}–${Math.min(d.offset + PAGE, d.total)} of ${d.total}` : '';
  $('d-prev').disabled = d.offset === 0;
  $('d-next').disabled = d.offset + PAGE >= d.total;
  renderLog();
}

function shardRow(t, sd, blocked) {
  const allowed = sd.allowed_actions ?? [];
  const open = S.log && S.log.index === sd.index;
  const step = sd.steps ? `${sd.step ?? 0}/${sd.steps}${sd.step_name ? ` ${sd.step_name}` : ''}` : (sd.step_name ?? '');
  return h('tr', {
    'data-testid': 'shard-row', 'data-shard-index': sd.index, 'data-status': sd.status, class: open ? 'open' : '',
    title: 'Click to show this shard’s log', onclick: (ev) => { if (!ev.target.closest('button')) openLog(sd); },
  },
  h('td', { text: String(sd.index) }),
  h('td', { class: 'key', text: sd.key ?? '' }),
  h('td', {}, h('span', { class: `badge st-${sd.status}`, text: label(sd.status) }),
    sd.held_by ? h('span', { class: 'badge held', 'data-held-by': sd.held_by, title: `held by ${sd.held_by}`, text: 'held' }) : null,
    sd.waiting_for ? h('span', { class: 'waiting', 'data-waiting': sd.waiting_for.kind, text: waitingText(sd.waiting_for) }) : null),
  h('td', { class: 'row-actions' }, ...allowed.map((a) => h('button', {
    type: 'button', class: `act small act-${a}`, 'data-action': a, disabled: !!blocked, title: blocked || ACTION_EXPLAIN[a],
    onclick: () => askAction(a, t.id, sd), text: ACTION_LABEL[a],
  }))),
  h('td', { class: 'num', text: `${sd.attempt ?? 0}·g${sd.generation ?? 0}`, title: `attempt ${sd.attempt ?? 0}, generation ${sd.generation ?? 0}` }),
  h('td', { text: sd.executor ?? '–' }),
  h('td', { class: 'step', text: step || '–' }),
  h('td', { class: 'err', text: sd.error ?? '', title: sd.error ?? null }),
  h('td', { class: 'time', text: fmtTime(sd.started_at), title: `started ${sd.started_at ?? '–'}\nfinished ${sd.finished_at ?? '–'}${sd.finished_at ? ` (${fmtDuration(sd.started_at, sd.finished_at)})` : ''}` }));
}

function setFilter(st) {
  const d = S.detail;
  if (st === null) d.filter.clear();
  else if (d.filter.has(st)) d.filter.delete(st); else d.filter.add(st);
  d.offset = 0;
  d.loaded = false;
  loadShards();
  schedule();
}

function renderLog() {
  const box = $('d-log'), lg = S.log;
  if (!lg || lg.taskId !== S.selected) { box.hidden = true; return; }
  box.hidden = false;
  box.dataset.shardIndex = String(lg.index);
  $('d-log-title').textContent = `Log · shard ${lg.key ?? ''} (#${lg.index})${isLive() ? ' · live' : ''}`;
  const pre = $('d-log-lines');
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const line = (l) => h('span', { class: `ln lv-${l.level ?? 'info'}` },
    h('time', { text: fmtTime(l.at), title: l.at ?? '' }), ` ${(l.level ?? '').padEnd(5)} a${l.attempt ?? '?'} `, l.line ?? '', '\n');
  if (pre._log === lg && pre._lines === lg.lines && pre._count <= lg.lines.length) {
    pre.append(...lg.lines.slice(pre._count).map(line));  // the same log, grown: append only
  } else {
    pre.replaceChildren(...lg.lines.map(line));
  }
  pre._log = lg;
  pre._lines = lg.lines;
  pre._count = lg.lines.length;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  $('d-log-note').textContent = lg.error ? `Cannot load the log: ${lg.error}`
    : lg.loading ? 'loading…' : `${lg.lines.length} lines${lg.truncated ? ' · older lines were evicted by the log cap' : ''}`;
}

// ---- executors, audit, events

// ---- forecast

/** A task's forecast line: the last GET …/forecast of the shown day if it has the task, else the
 *  board row's own fields. */
/** The last forecast of the shown day, unless the board's own fields are newer (a snapshot). */
function shownForecast(b) {
  const f = S.forecast;
  if (!f || !b || f.date !== b.date) return null;
  if (b.forecast_at && (!f.computed_at || b.forecast_at > f.computed_at)) return null;
  return f;
}

function forecastOf(t) {
  const b = board();
  const f = shownForecast(b)?.tasks.find((x) => x.id === t.id);
  if (f) return f;
  return { deadline: t.deadline, predicted_start: t.predicted_start, predicted_end: t.predicted_end, at_risk: !!t.at_risk, actual: DONE.has(t.status), low_confidence: false, note: null };
}

function forecastText(fc) {
  if (!fc.predicted_end) return fc.note ?? 'no prediction yet';
  const what = fc.actual ? 'ended' : 'predicted end';
  return `${what} ${fmtTime(fc.predicted_end)}${fc.deadline ? ` · deadline ${fmtTime(fc.deadline)}` : ''}${fc.at_risk ? ' · AT RISK' : ''}`;
}

/** The day's forecast line: the last GET …/forecast, else the board's fields. */
function dayForecast(b) {
  const sf = shownForecast(b);
  if (sf) return sf;
  return b ? { predicted_end: b.predicted_end, deadline: b.deadline, at_risk: !!b.at_risk, computed_at: b.forecast_at, tasks: null } : null;
}

function renderForecastHeader(b) {
  const el = $('day-forecast');
  const f = dayForecast(b);
  el.dataset.atRisk = String(!!f?.at_risk);
  el.textContent = !f ? '' : `${b.closed ? 'ended' : 'predicted end'} ${fmtTime(f.predicted_end)}` +
    `${f.deadline ? ` · deadline ${fmtTime(f.deadline)}` : ''}${f.at_risk ? ' · ⚠ at risk' : ''}`;
  el.title = f?.computed_at ? `forecast computed at ${fmtTime(f.computed_at)}` : 'no forecast computed yet';
}

/** Fetches the shown day's forecast once (the live day's then comes in `forecast` frames). */
async function loadForecast() {
  const date = S.view ? S.view.date : 'current';
  try {
    const f = await api('GET', `${dayPath(date)}/forecast`);
    if ((S.view ? S.view.date : 'current') !== date) return;  // the view changed meanwhile
    if (!S.forecast || S.forecast.date !== f.date || !S.forecast.computed_at || (f.computed_at && f.computed_at >= S.forecast.computed_at)) S.forecast = f;
    schedule();
  } catch (e) {
    // No forecast: the board's own fields are shown.
  }
}

/** The timeline of the day: actual bars for what ran, predicted bars for the rest, deadlines. */
function renderGantt(b) {
  const panel = $('gantt');
  if (!b) { panel.hidden = true; return; }
  const rows = b.tasks.map((t) => ({ t, fc: forecastOf(t) }));
  const ms = (iso) => (iso ? new Date(iso).getTime() : null);
  const f = dayForecast(b);
  // "Now" is the server's (the instant its forecast starts from), not this browser's clock.
  const now = f?.computed_at ? ms(f.computed_at) : Date.now();
  const times = [];
  for (const { fc } of rows) for (const v of [fc.predicted_start, fc.predicted_end]) if (v) times.push(ms(v));
  panel.hidden = !times.length;
  if (!times.length) return;
  const live = isLive() && !b.closed;
  if (live) times.push(now);
  let t0 = Math.min(...times), t1 = Math.max(...times);
  // Deadlines widen the range only when they are near the bars (else they are named below).
  const near = (d) => d >= t0 - (t1 - t0) / 2 && d <= t1 + (t1 - t0) / 2 + 60_000;
  const far = [];
  for (const d of [...rows.map(({ fc }) => fc.deadline), f?.deadline]) {
    if (!d) continue;
    if (near(ms(d))) { t0 = Math.min(t0, ms(d)); t1 = Math.max(t1, ms(d)); } else far.push(d);
  }
  if (t1 - t0 < 1000) t1 = t0 + 1000;
  const host = $('gantt-host');
  const W = Math.max(480, Math.min(1400, host.clientWidth || 900)), LABEL = 190, ROW = 17, TOP = 18;
  const x = (v) => LABEL + ((v - t0) / (t1 - t0)) * (W - LABEL - 10);
  const sig = JSON.stringify([W, rows.map(({ t, fc }) => [t.id, t.status, fc]), f?.deadline, live && now]);
  if (host._sig === sig) return;
  host._sig = sig;
  const H = TOP + rows.length * ROW + 4;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'Timeline: actual and predicted task bars with deadlines', 'data-testid': 'gantt-chart' });
  for (let i = 0; i <= 6; i++) {
    const v = t0 + ((t1 - t0) * i) / 6;
    svg.append(s('line', { class: 'g-grid', x1: x(v), x2: x(v), y1: TOP - 4, y2: H }));
    const tx = s('text', { class: 'g-axis', x: x(v), y: 11, 'text-anchor': i === 0 ? 'start' : i === 6 ? 'end' : 'middle' });
    tx.textContent = fmtTime(new Date(v).toISOString());
    svg.append(tx);
  }
  rows.forEach(({ t, fc }, i) => {
    const y = TOP + i * ROW;
    const start = ms(fc.predicted_start), end = ms(fc.predicted_end);
    const running = !fc.actual && start !== null && start <= now && (t.started_at || ['running', 'stopping'].includes(t.status));
    const kind = fc.actual ? 'actual' : (start === null && end === null ? 'none' : (running ? 'running' : 'predicted'));
    const g = s('g', { class: `g-row${fc.at_risk ? ' at-risk' : ''}`, 'data-testid': 'gantt-row', 'data-task-id': t.id, 'data-kind': kind, 'data-at-risk': String(!!fc.at_risk) });
    g.append(s('rect', { class: 'g-band', x: 0, y, width: W, height: ROW }));
    const title = s('title');
    title.textContent = `${t.id}: ${forecastText(fc)}`;
    g.append(title);
    const lbl = s('text', { class: 'g-label', x: 4, y: y + ROW - 5 });
    lbl.textContent = `${fc.at_risk ? '⚠ ' : ''}${t.id}`;
    g.append(lbl);
    const bar = (a, z, cls) => {
      if (a === null || z === null) return;
      g.append(s('rect', { class: cls, x: x(a).toFixed(1), y: y + 3, width: Math.max(2, x(z) - x(a)).toFixed(1), height: ROW - 6, rx: 2 }));
    };
    if (kind === 'actual') bar(start, end ?? start, `bar-actual st-${t.status}`);
    else if (kind === 'running') { bar(start, Math.min(now, end ?? now), 'bar-actual st-running'); if (end !== null && end > now) bar(now, end, 'bar-predicted'); }
    else if (kind === 'predicted') bar(start ?? end, end ?? start, `bar-predicted${fc.low_confidence ? ' low' : ''}`);
    else {
      const n = s('text', { class: 'g-axis', x: LABEL + 4, y: y + ROW - 5 });
      n.textContent = fc.note ?? 'no prediction';
      g.append(n);
    }
    if (fc.deadline && !far.includes(fc.deadline)) {
      const d = x(ms(fc.deadline));
      g.append(s('line', { class: 'g-deadline', x1: d, x2: d, y1: y + 1, y2: y + ROW - 1 }));
    }
    svg.append(g);
  });
  if (f?.deadline && !far.includes(f.deadline)) {
    const d = x(ms(f.deadline));
    svg.append(s('line', { class: 'g-day-deadline', x1: d, x2: d, y1: TOP - 4, y2: H, 'data-testid': 'gantt-day-deadline' }));
  }
  if (live) svg.append(s('line', { class: 'g-now', x1: x(now), x2: x(now), y1: TOP - 4, y2: H }));
  host.replaceChildren(svg);
  const beyond = far.length ? ` · deadlines beyond the range: ${[...new Set(far)].map(fmtTime).join(', ')}` : '';
  $('gantt-note').textContent = `${f?.computed_at ? `· forecast of ${fmtTime(f.computed_at)}` : (f ? '· what happened' : '')}${beyond}`;
}

function renderExecutors() {
  const ex = S.live.executors ?? [];
  $('ex-count').textContent = ex.length ? String(ex.length) : '';
  patch($('ex-body'), JSON.stringify(ex), () => ex.map((e) => h('tr', { 'data-testid': 'executor-row', 'data-executor': e.name, 'data-state': e.state },
    h('td', { text: e.name }),
    h('td', {}, h('span', { class: `badge ex-${e.state}`, text: e.state })),
    h('td', {}, h('span', { class: 'load' }, h('span', { class: 'load-fill', style: `width:${e.slots ? Math.min(100, (100 * e.busy) / e.slots) : 0}%` })), ` ${e.busy}/${e.slots}`),
    h('td', { text: `${e.heartbeat_age_ms < 1000 ? `${e.heartbeat_age_ms} ms` : `${(e.heartbeat_age_ms / 1000).toFixed(1)} s`}` }),
    h('td', { text: String((e.behaviors ?? []).length), title: (e.behaviors ?? []).join('\n') }))));
  $('ex-note').textContent = S.live.executorsAt ? `heartbeat ages as reported at ${fmtTime(S.live.executorsAt.toISOString())}` : 'no executor report yet';
}

function renderResources(b) {
  const rs = b?.resources ?? [];
  $('resources').hidden = !rs.length;
  patch($('res-body'), JSON.stringify(rs), () => rs.map((r) => h('tr', { 'data-testid': 'resource-row', 'data-resource': r.name, 'data-in-use': r.in_use, 'data-units': r.units },
    h('td', { text: r.name }),
    h('td', {}, h('span', { class: 'load' }, h('span', { class: 'load-fill', style: `width:${r.units ? Math.min(100, (100 * r.in_use) / r.units) : 100}%` })), ` ${r.in_use}/${r.units}`),
    h('td', { text: r.waiting ? `${r.waiting} waiting` : '—' }))));
}

function renderEntries() {
  const audit = [...S.audit.values()].sort((a, b) => b.seq - a.seq);
  patch($('audit-list'), audit.map((e) => e.seq).join(','), () => (audit.length ? audit.map((e) => h('li', { 'data-testid': 'audit-entry', 'data-seq': e.seq, 'data-action': null },
    h('time', { text: fmtTime(e.at), title: e.at ?? '' }), ' ',
    h('b', { text: e.actor ?? '?' }), ` ${label(e.action)} `,
    h('span', { class: 'target', text: `${e.task ?? ''}${e.shard !== null && e.shard !== undefined ? ` #${e.shard}` : ''}` }),
    e.reason ? h('q', { text: e.reason }) : null,
    h('span', { class: 'muted', text: ` from ${e.from ?? '?'} · seq ${e.seq}` }))) : [h('li', { class: 'muted', text: 'no operator actions yet' })]));
  patch($('event-list'), `${S.events.length}:${S.events[0]?.seq}:${S.events[0]?.task}`, () => (S.events.length ? S.events.map((e) => h('li', { 'data-seq': e.seq },
    h('time', { text: fmtTime(e.at.toISOString()) }), ' ', h('span', { class: 'target', text: e.task }), ' ',
    e.from ? h('span', { class: `badge st-${e.from}`, text: label(e.from) }) : null, e.from ? ' → ' : '',
    h('span', { class: `badge st-${e.to}`, text: label(e.to) }))) : [h('li', { class: 'muted', text: 'status changes seen since the page loaded appear here' })]));
}

let toastSeq = 0;
function toast(message, kind = 'info') {
  const el = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-toast': ++toastSeq, text: message });
  $('toasts').append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 9000 : 4000);
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('d-close').addEventListener('click', closeDetail);
  $('d-prev').addEventListener('click', () => { S.detail.offset = Math.max(0, S.detail.offset - PAGE); loadShards(); });
  $('d-next').addEventListener('click', () => { S.detail.offset += PAGE; loadShards(); });
  $('date-picker').addEventListener('change', (ev) => showDate(ev.target.value));
  $('date-live').addEventListener('click', backToLive);
  $('reconnect-now').addEventListener('click', () => { attempts = 0; connect(); });
  $('token-button').addEventListener('click', () => askToken(token() ? 'A token is set for this tab. Replace it:' : ''));
  $('action-form').addEventListener('submit', (ev) => { ev.preventDefault(); submitAction(); });
  $('a-cancel').addEventListener('click', () => { pendingAction = null; $('action-dialog').close(); });
  $('action-dialog').addEventListener('close', () => { pendingAction = null; });
  $('token-form').addEventListener('submit', (ev) => { ev.preventDefault(); finishToken(true); });
  $('t-cancel').addEventListener('click', () => finishToken(false));
  $('token-dialog').addEventListener('cancel', () => finishToken(false));
  for (const tab of document.querySelectorAll('[role=tab]')) {
    tab.addEventListener('click', () => {
      for (const t of document.querySelectorAll('[role=tab]')) t.setAttribute('aria-selected', String(t === tab));
      $('audit-list').hidden = tab.dataset.tab !== 'audit';
      $('event-list').hidden = tab.dataset.tab !== 'events';
    });
  }
  document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && S.selected && !document.querySelector('dialog[open]')) closeDetail(); });
}

async function start() {
  initToken();
  wire();
  render();
  await loadAudit();  // also tells us whether viewing needs the token (401) before opening /ws
  if (S.viewingProtected && !token()) await askToken('Viewing this server needs the operator token:');
  connect();
  loadForecast();
}

// Exposed for debugging and for the browser test; not an API.
window.taskflowConsole = { state: S, connect };
start();
