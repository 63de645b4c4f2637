import { clock, el, svg } from './dom.js';

const WIDTH = 600;
const HEIGHT = 160;
const PAD = 24;

/** The series drawn, each a line of 0-100%, with its colour class (style.css). */
const SERIES = [
  { key: 'cpuPercent', label: 'CPU', class: 'series-cpu' },
  { key: 'memoryPercent', label: 'Memory', class: 'series-memory' },
  { key: 'gpuPercent', label: 'GPU', class: 'series-gpu' },
];

/**
 * A line chart of a node's history (GET /api/nodes/:id/history): CPU, memory and GPU use in percent over the
 * points given, oldest left. A series with no figure (no GPU) is left out of the chart and its legend.
 */
export function historyChart(points) {
  if (points.length === 0)
    return el('p', { class: 'muted', text: 'No figures yet: a point every 15 s, the last 30 minutes.' });
  const first = points[0].ts;
  const span = Math.max(1, points.at(-1).ts - first);
  const x = (ts) => PAD + ((ts - first) / span) * (WIDTH - 2 * PAD);
  const y = (value) => HEIGHT - PAD - (Math.max(0, Math.min(100, value)) / 100) * (HEIGHT - 2 * PAD);
  const grid = [0, 50, 100].map((level) =>
    svg(
      'g',
      {},
      svg('line', { x1: PAD, x2: WIDTH - PAD, y1: y(level), y2: y(level), class: 'grid' }),
      svg('text', { x: 2, y: y(level) + 4, class: 'axis' }, document.createTextNode(`${level}%`)),
    ),
  );
  const drawn = SERIES.filter((series) => points.some((point) => typeof point[series.key] === 'number'));
  // The newest figure of each series as a dot: with one point so far, that is the whole chart.
  const dots = drawn.map((series) => {
    const last = points.filter((point) => typeof point[series.key] === 'number').at(-1);
    return svg('circle', { class: `marker ${series.class}`, cx: x(last.ts), cy: y(last[series.key]), r: 3 });
  });
  const lines = drawn.map((series) =>
    svg('polyline', {
      class: `line ${series.class}`,
      'data-series': series.key,
      points: points
        .filter((point) => typeof point[series.key] === 'number')
        .map((point) => `${x(point.ts).toFixed(1)},${y(point[series.key]).toFixed(1)}`)
        .join(' '),
    }),
  );
  const chart = svg(
    'svg',
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: 'chart',
      role: 'img',
      'aria-label': 'CPU, memory and GPU use',
    },
    grid,
    lines,
    dots,
  );
  const latest = points.at(-1);
  const legend = el(
    'div',
    { class: 'legend' },
    drawn.map((series) =>
      el(
        'span',
        { class: `legend-item ${series.class}` },
        `${series.label} ${Math.round(latest[series.key] ?? 0)}%`,
      ),
    ),
    el('span', { class: 'muted small', text: `${clock(first)} – ${clock(latest.ts)}` }),
  );
  return el('div', { class: 'chart-wrap' }, chart, legend);
}
