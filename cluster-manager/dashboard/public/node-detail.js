import { historyChart } from './chart.js';
import { $, age, api, el, errorView, mebibytes, usageBar } from './dom.js';

/** History is fetched again at most this often while a node is shown (a point is kept per 15 s). */
const HISTORY_EVERY_MS = 15_000;

let selected = null;
let history = { nodeId: null, at: 0, points: [] };

export function selectedNode() {
  return selected;
}

/** Shows a node's detail (GET /api/nodes/:id and its history); `null` closes it. */
export async function showNode(nodeId) {
  selected = nodeId;
  if (!nodeId) {
    $('node-detail').hidden = true;
    return;
  }
  await refreshNode(true);
}

/** The node shown changed (a stream notice): fetched again, its history at most every 15 s. */
export async function refreshNode(force = false) {
  const nodeId = selected;
  if (!nodeId) return;
  const card = $('node-detail');
  try {
    const node = await api('GET', `/api/nodes/${encodeURIComponent(nodeId)}`);
    if (force || history.nodeId !== nodeId || Date.now() - history.at >= HISTORY_EVERY_MS) {
      const answer = await api('GET', `/api/nodes/${encodeURIComponent(nodeId)}/history`);
      history = { nodeId, at: Date.now(), points: answer.points };
    }
    if (selected !== nodeId) return;
    card.replaceChildren(...detailView(node, history.points));
  } catch (error) {
    card.replaceChildren(...errorView(error));
  }
  card.hidden = false;
}

function detailView(node, points) {
  const telemetry = node.telemetry;
  const gpus = telemetry?.gpus ?? node.capacity.gpus ?? [];
  const sensors = telemetry?.sensors ?? [];
  const flags = [
    node.cordoned ? el('span', { class: 'badge cordoned', text: 'cordoned' }) : null,
    node.draining ? el('span', { class: 'badge draining', text: 'draining' }) : null,
  ];
  return [
    el(
      'div',
      { class: 'detail-head' },
      el('h2', {}, el('span', { class: `dot ${node.status}`, title: node.status }), node.name, ...flags),
      el(
        'div',
        { class: 'actions' },
        node.cordoned
          ? el('button', {
              type: 'button',
              class: 'secondary',
              text: 'Uncordon',
              onclick: () => act(node, 'uncordon'),
            })
          : el('button', {
              type: 'button',
              class: 'secondary',
              text: 'Cordon',
              onclick: () => act(node, 'cordon'),
            }),
        el('button', {
          type: 'button',
          class: 'danger',
          text: 'Drain',
          disabled: node.draining,
          onclick: () => act(node, 'drain'),
        }),
        el('button', { type: 'button', class: 'secondary', text: 'Close', onclick: () => showNode(null) }),
      ),
    ),
    el('p', { id: 'node-action', class: 'muted', role: 'status' }),
    el(
      'dl',
      { class: 'facts' },
      fact('Status', `${node.status}, last seen ${age(node.lastSeen)}`),
      fact('Version', node.version),
      fact('Machine', `${node.arch} · ${node.os} · ${node.runtimes.join(', ')}`),
      fact(
        'CPU',
        `${round(node.allocated.cpus)} of ${node.capacity.cpus} cores allocated`,
        usageBar(node.usage.cpuPercent),
      ),
      fact(
        'Memory',
        `${mebibytes(node.allocated.memoryBytes)} of ${mebibytes(node.capacity.memoryBytes)} allocated`,
        usageBar(node.usage.memoryPercent),
      ),
      fact('GPUs', `${node.allocated.gpus} of ${gpus.length} allocated`),
      fact('Disk', '', usageBar(node.usage.diskPercent)),
      fact(
        'Labels',
        '',
        Object.keys(node.labels).length > 0
          ? Object.entries(node.labels).map(([key, value]) =>
              el('span', { class: 'chip label', text: `${key}=${value}` }),
            )
          : el('span', { class: 'muted', text: 'none' }),
      ),
    ),
    el('h3', { text: 'Last 30 minutes' }),
    historyChart(points),
    gpus.length > 0 ? el('h3', { text: 'GPUs' }) : null,
    gpus.length > 0
      ? table(
          ['#', 'Model', 'Use', 'Temperature', 'Memory'],
          gpus.map((gpu) => [
            gpu.index,
            `${gpu.vendor} ${gpu.model}`,
            gpu.utilizationPercent ?? '–',
            typeof gpu.temperatureC === 'number' ? `${gpu.temperatureC} °C` : '–',
            gpu.memoryTotalMB ? `${gpu.memoryUsedMB ?? '?'} / ${gpu.memoryTotalMB} MB` : '–',
          ]),
          'gpus',
        )
      : null,
    sensors.length > 0 ? el('h3', { text: 'Sensors' }) : null,
    sensors.length > 0
      ? table(
          ['Sensor', 'Type', 'Value'],
          sensors.map((sensor) => [
            sensor.id,
            sensor.type,
            `${sensor.value}${sensor.unit ? ` ${sensor.unit}` : ''}${sensor.stale ? ' (stale)' : ''}`,
          ]),
          'sensors',
        )
      : null,
    el('h3', { text: `Instances (${node.instances.length})` }),
    node.instances.length > 0
      ? table(
          ['Instance', 'Status', 'Detail'],
          node.instances.map((instance) => [
            `${instance.jobName ?? instance.job}#${instance.number}`,
            instance.status,
            instance.detail,
          ]),
          'node-instances',
        )
      : el('p', { class: 'muted', text: 'Nothing runs here.' }),
  ];
}

async function act(node, action) {
  const say = $('node-action');
  if (action === 'drain' && !confirm(`Drain ${node.name}? Every instance there moves to other nodes.`))
    return;
  try {
    await api('POST', `/api/nodes/${encodeURIComponent(node.id)}/${action}`);
    say.textContent = `${node.name}: ${action} asked.`;
    await refreshNode(true);
  } catch (error) {
    say.replaceChildren(...errorView(error));
  }
}

function fact(name, text, ...extra) {
  return el('div', {}, el('dt', { text: name }), el('dd', {}, text, ...extra));
}

function table(headers, rows, id) {
  return el(
    'div',
    { class: 'table-wrap' },
    el(
      'table',
      { class: 'nested', id },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          headers.map((header) => el('th', { text: header })),
        ),
      ),
      el(
        'tbody',
        {},
        rows.map((row) =>
          el(
            'tr',
            {},
            row.map((cell) => el('td', { text: cell })),
          ),
        ),
      ),
    ),
  );
}

function round(value) {
  return Math.round(value * 100) / 100;
}
