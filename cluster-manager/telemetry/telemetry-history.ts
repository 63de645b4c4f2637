import type { NodeTelemetry } from '../../shared/index.js';

/** How many points a node keeps, and how far apart at least: 120 points of 15 s, the last 30 minutes. */
export const HISTORY_POINTS = 120;
export const HISTORY_STEP_MS = 15_000;

/** The series kept per point, in this order. */
const SERIES = ['cpuPercent', 'memoryPercent', 'gpuPercent', 'gpuTemperatureC'] as const;
type Series = (typeof SERIES)[number];

/** One point of a node's history; a GPU figure is null where the node has no GPU (or it did not say). */
export type HistoryPoint = { ts: number } & Record<Series, number | null>;

/** One node's ring: times, and each series as 32-bit floats (NaN for "not said"): 2.4 KB a node. */
interface Ring {
  ts: Float64Array;
  values: Float32Array;
  /** The next slot to write, and how many are filled. */
  next: number;
  filled: number;
}

/**
 * What the dashboard's charts draw: a short, bounded history of each node's CPU, memory and GPU use and GPU
 * temperature, in memory only (it starts empty with the cluster manager). Telemetry arrives every interval; a
 * new point starts at most every HISTORY_STEP_MS (telemetry within a step updates the newest point), so the cost
 * per node is fixed whatever the interval: at 10,000 nodes, 24 MB. The GPU figures are the busiest GPU's utilisation and the hottest GPU's temperature.
 */
export class TelemetryHistory {
  private readonly rings = new Map<string, Ring>();

  record(nodeId: string, telemetry: NodeTelemetry, now = Date.now()): void {
    let ring = this.rings.get(nodeId);
    if (!ring) {
      ring = {
        ts: new Float64Array(HISTORY_POINTS),
        values: new Float32Array(HISTORY_POINTS * SERIES.length),
        next: 0,
        filled: 0,
      };
      this.rings.set(nodeId, ring);
    }
    const newest = (ring.next + HISTORY_POINTS - 1) % HISTORY_POINTS;
    // Within a step of the newest point, the newest figures replace its own: the chart ends with what is now.
    const within = ring.filled > 0 && now - ring.ts[newest]! < HISTORY_STEP_MS;
    // Every telemetry message of every node comes here: no arrays made, four numbers written.
    let utilization = Number.NaN;
    let temperature = Number.NaN;
    for (const gpu of telemetry.gpus) {
      utilization = larger(utilization, gpu.utilizationPercent);
      temperature = larger(temperature, gpu.temperatureC);
    }
    const slot = (within ? newest : ring.next) * SERIES.length;
    ring.values[slot] = telemetry.cpu.percent;
    ring.values[slot + 1] = telemetry.memory.percent;
    ring.values[slot + 2] = utilization;
    ring.values[slot + 3] = temperature;
    if (within) return;
    ring.ts[ring.next] = now;
    ring.next = (ring.next + 1) % HISTORY_POINTS;
    ring.filled = Math.min(HISTORY_POINTS, ring.filled + 1);
  }

  /** The node's points, oldest first (empty for a node not heard since the cluster manager started). */
  of(nodeId: string): HistoryPoint[] {
    const ring = this.rings.get(nodeId);
    if (!ring) return [];
    const points: HistoryPoint[] = [];
    const first = (ring.next + HISTORY_POINTS - ring.filled) % HISTORY_POINTS;
    for (let i = 0; i < ring.filled; i++) {
      const slot = (first + i) % HISTORY_POINTS;
      const point = { ts: ring.ts[slot]! } as HistoryPoint;
      SERIES.forEach((series, index) => {
        const value = ring.values[slot * SERIES.length + index]!;
        point[series] = Number.isNaN(value) ? null : Math.round(value * 10) / 10;
      });
      points.push(point);
    }
    return points;
  }

  forget(nodeId: string): void {
    this.rings.delete(nodeId);
  }
}

/** The larger of a running maximum (NaN: none yet) and a figure a GPU may not have said. */
function larger(so: number, value: number | null | undefined): number {
  if (value === null || value === undefined) return so;
  return Number.isNaN(so) || value > so ? value : so;
}
