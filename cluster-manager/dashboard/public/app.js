// The cluster dashboard: follows the cluster manager's push (GET /api/stream) and fetches again only the job or
// node a notice names; it polls every 2 s only while the stream is down. Plain DOM, no framework, no innerHTML:
// every value from the API goes in as text, so a job or node name cannot inject markup. The parts: dom.js
// (elements, API calls), node-detail.js and chart.js (a node's detail and history), job-editor.js (YAML or JSON
// deploy and update), log-pane.js (an instance's output as it streams).

import { $, ApiError, age, api, clock, el, errorView, TOKEN_KEY, usageBar } from './dom.js';
import { applySpec, editJob, planSpec } from './job-editor.js';
import { openLogs, stopLogs } from './log-pane.js';
import { refreshNode, selectedNode, showNode } from './node-detail.js';

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
/** Replica counts typed but not submitted yet, by job id: a re-render (a notice) keeps what the operator typed. */
const typedReplicas = new Map();
/** What the page shows, by id: kept up to date by the stream's notices. */
const shown = { nodes: new Map(), jobs: new Map(), events: [] };
let pollTimer = null;
/** The open stream's AbortController; null while there is none. */
let stream = null;
let reconnectTimer = null;
let reconnectAttempt = 0;

// ---- formatting

function sortedCounts(counts) {
  return Object.entries(counts ?? {})
    .filter(([, count]) => count > 0)
    .sort(([a], [b]) => STATUS_ORDER.indexOf(a) - STATUS_ORDER.indexOf(b));
}

// ---- rendering

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
        el('button', {
          type: 'button',
          class: 'link node-link',
          text: node.name,
          'aria-label': `Show node ${node.name}`,
          onclick: () => showNode(node.id),
        }),
        node.cordoned
          ? el('span', { class: 'badge cordoned', text: node.draining ? 'draining' : 'cordoned' })
          : null,
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
        el('td', {}, versionView(job)),
        el('td', { class: 'actions' }, jobActions(job)),
      ),
    );
    if (open) rows.push(el('tr', { class: 'instances' }, el('td', { colspan: 7 }, instancesTable(job))));
  }
  if (rows.length === 0) rows.push(emptyRow(7, 'No jobs. Deploy one below.'));
  $('jobs').tBodies[0].replaceChildren(...rows);
  $('job-count').textContent = String(jobs.length);
}

/** `v3 · rolling: 1 of 3 new healthy` while a roll-out runs; the version alone otherwise. */
function versionView(job) {
  const rollout = job.rollout;
  const state =
    rollout && rollout.state !== 'succeeded' && rollout.version === job.version
      ? el('div', {
          class: `muted small rollout ${rollout.state}`,
          text: `${rollout.state}: ${rollout.detail}`,
        })
      : null;
  return [el('span', { text: `v${job.version ?? 1}` }), state];
}

function jobActions(job) {
  if (job.state === 'deleting') return el('span', { class: 'muted', text: 'deleting' });
  const replicas = el('input', {
    type: 'number',
    min: 0,
    max: 1000,
    value: typedReplicas.get(job.id) ?? job.replicas,
    class: 'replicas',
    'aria-label': `Replicas of ${job.name}`,
    oninput: (event) => typedReplicas.set(job.id, event.target.value),
  });
  return [
    el(
      'form',
      { class: 'inline-form scale', onsubmit: (event) => scaleJob(event, job, replicas) },
      replicas,
      el('button', { type: 'submit', class: 'secondary', text: 'Scale' }),
    ),
    el('button', { type: 'button', class: 'secondary', text: 'Edit', onclick: () => editJob(job) }),
    el('button', { type: 'button', class: 'danger', text: 'Delete', onclick: () => deleteJob(job) }),
  ];
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
        ['#', 'Node', 'Status', 'Health', 'Detail', 'Overlay IP', 'Restarts', 'Version', ''].map((h) =>
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
          el(
            'td',
            {},
            instance.health ? el('span', { class: `chip ${instance.health}`, text: instance.health }) : '–',
          ),
          el('td', { class: 'detail', text: instance.detail || '' }),
          el('td', {
            class: 'mono',
            text: instance.instanceIp ?? '–',
            title: instance.namespaceIp ? `namespace IP ${instance.namespaceIp}` : undefined,
          }),
          el('td', { text: instance.restarts ?? 0 }),
          el('td', { text: `v${instance.version ?? 1}`, title: `generation ${instance.generation ?? 0}` }),
          el(
            'td',
            { class: 'actions' },
            el('button', {
              type: 'button',
              class: 'secondary',
              text: 'Logs',
              disabled: !instance.nodeId,
              onclick: () => openLogs(job, instance),
            }),
            el('button', {
              type: 'button',
              class: 'secondary',
              text: 'Move',
              disabled: !instance.nodeId || job.state !== 'active',
              onclick: () => moveInstance(job, instance),
            }),
          ),
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
  } else if (kind === 'job' || kind === 'node') {
    notice(kind, message.id);
    if (kind === 'node' && message.id === selectedNode()) refreshNode();
  } else if (kind === 'resync') refresh();
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
    message.replaceChildren(...errorView(error));
    message.className = 'error';
    message.hidden = false;
  }
  notice('job', job.id);
}

/** The job a page action changed: fetched again at once (its notice comes too; this one is quicker). */
function changed(jobId, created) {
  if (created) expandedJobs.add(jobId);
  notice('job', jobId);
}

async function scaleJob(event, job, input) {
  event.preventDefault();
  const message = $('jobs-message');
  typedReplicas.delete(job.id);
  try {
    await api('POST', `/api/jobs/${encodeURIComponent(job.id)}/replicate`, { replicas: Number(input.value) });
    message.hidden = true;
  } catch (error) {
    message.replaceChildren(...errorView(error));
    message.className = 'error';
    message.hidden = false;
  }
  changed(job.id, false);
}

async function moveInstance(job, instance) {
  const message = $('jobs-message');
  try {
    await api('POST', `/api/jobs/${encodeURIComponent(job.id)}/move`, { instance: instance.number });
    message.textContent = `Moving ${job.name}#${instance.number}: it runs on its new node before it stops here.`;
    message.className = 'ok';
  } catch (error) {
    message.replaceChildren(...errorView(error));
    message.className = 'error';
  }
  message.hidden = false;
  changed(job.id, false);
}

// ---- token

function showLogin(message) {
  stopFollowing();
  $('cluster').hidden = true;
  $('change-token').hidden = true;
  stopLogs();
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

$('deploy-form').addEventListener('submit', (event) => {
  event.preventDefault();
  applySpec(changed);
});
$('plan-button').addEventListener('click', () => planSpec());
$('log-stop').addEventListener('click', () => stopLogs());

if (sessionStorage.getItem(TOKEN_KEY)) showCluster();
else showLogin();
