// The cluster dashboard: follows the cluster manager's push (GET /api/stream) and fetches again only the job or
// node a notice names; it polls every 2 s only while the stream is down. Plain DOM, no framework, no innerHTML:
// every value from the API goes in as text, so a job or node name cannot inject markup.

const TOKEN_KEY = 'edge.apiToken';
/** The fallback poll, while the stream is down. */
const POLL_MS = 2000;
/** Reconnecting the stream: from 1 s, doubling to 30 s. */
const RECONNECT_MS = 1000;
const RECONNECT_MAX_MS = 30_000;
/** More notices than this at once: the whole list is fetched instead of each one. */
const FETCH_EACH_MAX = 20;
const EVENTS_SHOWN = 20;
const STATUS_ORDER = [
  'running',
  'pending',
  'scheduled',
  'pulling',
  'creating',
  'exited',
  'stopping',
  'stopped',
  'failed',
  'lost',
];

const expandedJobs = new Set();
/** What the page shows, by id: kept up to date by the stream's notices. */
const shown = { nodes: new Map(), jobs: new Map(), events: [] };
let pollTimer = null;
/** The open stream's AbortController; null while there is none. */
let stream = null;
let reconnectTimer = null;
let reconnectAttempt = 0;

const $ = (id) => document.getElementById(id);

/** Creates an element; `props` sets classes, text, attributes and `on*` handlers; children are nodes or text. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.details = body?.error?.details ?? [];
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// ---- formatting

function percent(value) {
  return typeof value === 'number' && Number.isFinite(value) ? Math.max(0, Math.min(100, value)) : null;
}

function age(ts) {
  if (typeof ts !== 'number') return 'never';
  const seconds = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (seconds < 120) return `${seconds}s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour12: false });
}

function sortedCounts(counts) {
  return Object.entries(counts ?? {})
    .filter(([, count]) => count > 0)
    .sort(([a], [b]) => STATUS_ORDER.indexOf(a) - STATUS_ORDER.indexOf(b));
}

// ---- rendering

function usageBar(value) {
  const pct = percent(value);
  if (pct === null) return el('span', { class: 'muted', text: '–' });
  const bar = el('span', { class: 'bar-fill' });
  bar.style.width = `${pct}%`;
  if (pct >= 90) bar.classList.add('hot');
  return el('span', { class: 'usage' }, el('span', { class: 'bar' }, bar), `${Math.round(pct)}%`);
}

function instancesOnNode(node, jobs) {
  if (Array.isArray(node.instances)) return node.instances.length;
  if (typeof node.instances === 'number') return node.instances;
  let count = 0;
  for (const job of jobs)
    for (const instance of job.instances ?? []) if (instance.nodeId === node.id) count++;
  return count;
}

function renderNodes(nodes, jobs) {
  const rows = nodes.map((node) =>
    el(
      'tr',
      {},
      el(
        'td',
        {},
        el('span', { class: `dot ${node.status}`, title: node.status }),
        el('strong', { text: node.name }),
        el('div', { class: 'muted small', text: node.id }),
      ),
      el('td', { text: node.status }),
      el('td', { text: node.arch }),
      el('td', {}, usageBar(node.usage?.cpuPercent)),
      el('td', {}, usageBar(node.usage?.memoryPercent)),
      el('td', { text: instancesOnNode(node, jobs) }),
      el('td', { text: age(node.lastSeen) }),
    ),
  );
  if (rows.length === 0) rows.push(emptyRow(7, 'No nodes have joined yet.'));
  $('nodes').tBodies[0].replaceChildren(...rows);
  const online = nodes.filter((node) => node.status === 'online').length;
  $('node-count').textContent = `${online}/${nodes.length} online`;
}

function renderJobs(jobs) {
  const rows = [];
  for (const job of jobs) {
    const open = expandedJobs.has(job.id);
    rows.push(
      el(
        'tr',
        { class: open ? 'job open' : 'job' },
        el(
          'td',
          {},
          el('button', {
            type: 'button',
            class: 'toggle',
            'aria-expanded': String(open),
            'aria-label': `${open ? 'Hide' : 'Show'} instances of ${job.name}`,
            text: open ? '▾' : '▸',
            onclick: () => toggleJob(job.id),
          }),
        ),
        el(
          'td',
          {},
          el('strong', { text: job.name }),
          el('div', { class: 'muted small', text: job.serviceIp ? `${job.id} · ${job.serviceIp}` : job.id }),
        ),
        el('td', {}, el('span', { class: `badge ${job.state}`, text: job.state })),
        el('td', {}, instanceChips(job.instanceCounts)),
        el('td', { class: 'mono', text: job.image }),
        el(
          'td',
          {},
          el('button', {
            type: 'button',
            class: 'danger',
            disabled: job.state === 'deleting',
            text: 'Delete',
            onclick: () => deleteJob(job),
          }),
        ),
      ),
    );
    if (open) rows.push(el('tr', { class: 'instances' }, el('td', { colspan: 6 }, instancesTable(job))));
  }
  if (rows.length === 0) rows.push(emptyRow(6, 'No jobs. Deploy one below.'));
  $('jobs').tBodies[0].replaceChildren(...rows);
  $('job-count').textContent = String(jobs.length);
}

function instanceChips(counts) {
  const chips = sortedCounts(counts).map(([status, count]) =>
    el('span', { class: `chip ${status}`, text: `${count} ${status}` }),
  );
  return chips.length > 0 ? chips : el('span', { class: 'muted', text: 'none' });
}

function instancesTable(job) {
  const instances = [...(job.instances ?? [])].sort((a, b) => a.number - b.number);
  if (instances.length === 0) return el('p', { class: 'muted', text: 'No instances.' });
  return el(
    'table',
    { class: 'nested' },
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        ['#', 'Node', 'Status', 'Detail', 'Overlay IP', 'Restarts', 'Generation'].map((h) =>
          el('th', { text: h }),
        ),
      ),
    ),
    el(
      'tbody',
      {},
      instances.map((instance) =>
        el(
          'tr',
          {},
          el('td', { text: instance.number }),
          el('td', { text: instance.nodeName ?? instance.nodeId ?? '–' }),
          el('td', {}, el('span', { class: `chip ${instance.status}`, text: instance.status })),
          el('td', { class: 'detail', text: instance.detail || '' }),
          el('td', {
            class: 'mono',
            text: instance.instanceIp ?? '–',
            title: instance.namespaceIp ? `namespace IP ${instance.namespaceIp}` : undefined,
          }),
          el('td', { text: instance.restarts ?? 0 }),
          el('td', { text: instance.generation ?? 0 }),
        ),
      ),
    ),
  );
}

function renderEvents(events) {
  const items = events.map((event) =>
    el(
      'li',
      {},
      el('time', { datetime: new Date(event.ts).toISOString(), text: clock(event.ts) }),
      el('span', { class: 'event-type', text: event.type }),
      el('span', { text: event.message }),
    ),
  );
  if (items.length === 0) items.push(el('li', { class: 'muted', text: 'No events yet.' }));
  $('events').replaceChildren(...items);
}

function emptyRow(columns, message) {
  return el('tr', {}, el('td', { colspan: columns, class: 'muted empty', text: message }));
}

function setConnection(text, ok) {
  const node = $('connection');
  node.textContent = text;
  node.classList.toggle('bad', !ok);
}

// ---- fetching what changed

function byName(a, b) {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1;
}

function byCreation(a, b) {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1);
}

function render() {
  const jobs = [...shown.jobs.values()].sort(byCreation);
  renderNodes([...shown.nodes.values()].sort(byName), jobs);
  renderJobs(jobs);
  renderEvents(shown.events);
}

/** A node as the list shows it: the one-node answer also carries its telemetry and instances. */
function listedNode(node) {
  const { telemetry: _telemetry, instances: _instances, ...view } = node;
  return view;
}

/** Everything afresh: at start, after every (re)connect of the stream, and on the fallback poll. */
async function fetchAll() {
  const [nodes, jobs, events] = await Promise.all([
    api('GET', '/api/nodes'),
    api('GET', '/api/jobs'),
    api('GET', `/api/events?limit=${EVENTS_SHOWN}`),
  ]);
  shown.nodes = new Map(nodes.map((node) => [node.id, node]));
  shown.jobs = new Map(jobs.map((job) => [job.id, job]));
  shown.events = events;
}

/** One job or node again; a 404 means it is gone. */
async function fetchOne(kind, id) {
  const map = kind === 'job' ? shown.jobs : shown.nodes;
  try {
    const item = await api('GET', `/api/${kind}s/${encodeURIComponent(id)}`);
    map.set(id, kind === 'job' ? item : listedNode(item));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) map.delete(id);
    else throw error;
  }
}

async function fetchList(kind) {
  const items = await api('GET', `/api/${kind}s`);
  const map = new Map(items.map((item) => [item.id, item]));
  if (kind === 'job') shown.jobs = map;
  else shown.nodes = map;
}

/** Notices gathered while a fetch runs; applied one batch at a time. */
const noticed = { job: new Set(), node: new Set() };
let applying = false;

function notice(kind, id) {
  noticed[kind].add(id);
  applyNoticesSoon();
}

function applyNoticesSoon() {
  if (applying) return;
  applying = true;
  applyNotices().finally(() => {
    applying = false;
    // Noticed after the last look of the loop, before this ran.
    if (noticed.job.size > 0 || noticed.node.size > 0) applyNoticesSoon();
  });
}

async function applyNotices() {
  try {
    while (noticed.job.size > 0 || noticed.node.size > 0) {
      const work = [];
      for (const kind of ['job', 'node']) {
        const ids = [...noticed[kind]];
        noticed[kind].clear();
        if (ids.length > FETCH_EACH_MAX) work.push(fetchList(kind));
        else for (const id of ids) work.push(fetchOne(kind, id));
      }
      await Promise.all(work);
      render();
    }
  } catch (error) {
    handleFailure(error);
  }
}

async function refresh() {
  try {
    await fetchAll();
    render();
    setConnection(`${stream ? 'live' : 'polling'} · updated ${clock(Date.now())}`, true);
  } catch (error) {
    handleFailure(error);
  }
}

function handleFailure(error) {
  if (error instanceof ApiError && error.status === 401) {
    showLogin('The cluster manager refused this token.');
    return;
  }
  setConnection(
    error instanceof ApiError ? `error: ${error.message}` : 'cluster manager unreachable, retrying…',
    false,
  );
}

// ---- the stream (GET /api/stream: server-sent events, read with fetch to send the token)

/** Reads text/event-stream: `event:` and `data:` lines, a blank line ends a message, `:` lines are comments. */
function sseParser(onMessage) {
  let buffer = '';
  let event = '';
  let data = [];
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length > 0) onMessage(event || 'message', data.join('\n'));
        event = '';
        data = [];
      } else if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
  };
}

function onStreamMessage(kind, data) {
  const message = JSON.parse(data);
  if (kind === 'event') {
    // Newer than what the page shows (the list fetched at connect may hold it already).
    if (shown.events.length > 0 && message.id <= shown.events[0].id) return;
    shown.events = [message, ...shown.events].slice(0, EVENTS_SHOWN);
    renderEvents(shown.events);
  } else if (kind === 'job' || kind === 'node') notice(kind, message.id);
  else if (kind === 'resync') refresh();
}

async function connectStream() {
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch('/api/stream?kinds=event,job,node', {
      headers: {
        authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) ?? ''}`,
        accept: 'text/event-stream',
      },
      signal: controller.signal,
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => undefined));
    reconnectAttempt = 0;
    clearTimeout(pollTimer);
    await refresh();
    const parse = sseParser(onStreamMessage);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parse(value);
    }
    throw new Error('the stream ended');
  } catch (error) {
    if (stream !== controller) return;
    stream = null;
    if (error instanceof ApiError && error.status === 401) {
      showLogin('The cluster manager refused this token.');
      return;
    }
    // Down: poll until it is back.
    schedulePoll();
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MS * 2 ** reconnectAttempt++);
    reconnectTimer = setTimeout(connectStream, delay);
  }
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    if (stream) return;
    await refresh();
    schedulePoll();
  }, POLL_MS);
}

function stopFollowing() {
  const open = stream;
  stream = null;
  open?.abort();
  clearTimeout(pollTimer);
  clearTimeout(reconnectTimer);
}

function toggleJob(jobId) {
  if (expandedJobs.has(jobId)) expandedJobs.delete(jobId);
  else expandedJobs.add(jobId);
  render();
}

// ---- actions

async function deleteJob(job) {
  if (!confirm(`Delete job ${job.name} and stop its instances?`)) return;
  const message = $('jobs-message');
  try {
    await api('DELETE', `/api/jobs/${encodeURIComponent(job.id)}`);
    message.hidden = true;
  } catch (error) {
    message.textContent = `Could not delete ${job.name}: ${error.message}`;
    message.hidden = false;
  }
  notice('job', job.id);
}

async function deploy(event) {
  event.preventDefault();
  const result = $('deploy-result');
  let spec;
  try {
    spec = JSON.parse($('deploy-spec').value);
  } catch (error) {
    result.replaceChildren(el('p', { class: 'error', text: `Not valid JSON: ${error.message}` }));
    return;
  }
  try {
    const job = await api('POST', '/api/jobs', spec);
    result.replaceChildren(el('p', { class: 'ok', text: `Created job ${job.name} (${job.id}).` }));
    expandedJobs.add(job.id);
    notice('job', job.id);
  } catch (error) {
    const details = error instanceof ApiError ? error.details : [];
    result.replaceChildren(
      el('p', {
        class: 'error',
        text: error instanceof ApiError ? error.message : 'Cluster manager unreachable.',
      }),
      details.length > 0
        ? el(
            'ul',
            { class: 'details' },
            details.map((detail) => el('li', {}, el('code', { text: detail.path }), `: ${detail.message}`)),
          )
        : null,
    );
  }
}

// ---- token

function showLogin(message) {
  stopFollowing();
  $('cluster').hidden = true;
  $('change-token').hidden = true;
  $('login').hidden = false;
  $('login-error').hidden = !message;
  $('login-error').textContent = message ?? '';
  setConnection('not connected', false);
  $('token-input').focus();
}

function showCluster() {
  $('login').hidden = true;
  $('cluster').hidden = false;
  $('change-token').hidden = false;
  stopFollowing();
  setConnection('connecting…', true);
  connectStream();
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-input').value = '';
  showCluster();
});

$('change-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

$('deploy-form').addEventListener('submit', deploy);

if (sessionStorage.getItem(TOKEN_KEY)) showCluster();
else showLogin();
