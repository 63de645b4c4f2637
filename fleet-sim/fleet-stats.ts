import { monitorEventLoopDelay } from 'node:perf_hooks';

/** What the whole fleet did, as counters that only grow (gauges are counted by the fleet when it reports). */
export interface FleetCounters {
  registrations: number;
  mqttConnects: number;
  mqttReconnects: number;
  /** MQTT refused the login: the worker registers again. */
  reregistrations: number;
  telemetrySent: number;
  jobResourcesSent: number;
  commandsReceived: number;
  commandsDuplicate: number;
  commandsStale: number;
  commandsInvalid: number;
  acksSent: number;
  statusReportsSent: number;
}

export function newCounters(): FleetCounters {
  return {
    registrations: 0,
    mqttConnects: 0,
    mqttReconnects: 0,
    reregistrations: 0,
    telemetrySent: 0,
    jobResourcesSent: 0,
    commandsReceived: 0,
    commandsDuplicate: 0,
    commandsStale: 0,
    commandsInvalid: 0,
    acksSent: 0,
    statusReportsSent: 0,
  };
}

export interface LatencySummary {
  count: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

/**
 * Latencies in ms: percentiles over the latest samples (a ring of fixed size, sorted only when reported),
 * count and max over the whole run.
 */
export class LatencyWindow {
  private readonly ring: Float64Array;
  private next = 0;
  private filled = 0;
  private count = 0;
  private max = Number.NEGATIVE_INFINITY;

  constructor(size = 8192) {
    this.ring = new Float64Array(size);
  }

  record(ms: number): void {
    this.ring[this.next] = ms;
    this.next = (this.next + 1) % this.ring.length;
    this.filled = Math.min(this.filled + 1, this.ring.length);
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  summary(): LatencySummary {
    if (this.filled === 0) return { count: 0, p50: null, p99: null, max: null };
    const sorted = this.ring.slice(0, this.filled).sort();
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    return { count: this.count, p50: round(at(0.5)), p99: round(at(0.99)), max: round(this.max) };
  }
}

/** The kinds of error seen, with a count and the latest message of each: no per-worker log lines. */
export class ErrorBook {
  private readonly kinds = new Map<string, { count: number; last: string }>();

  note(kind: string, message: string): void {
    const entry = this.kinds.get(kind);
    if (entry) {
      entry.count++;
      entry.last = message;
    } else this.kinds.set(kind, { count: 1, last: message });
  }

  get total(): number {
    let total = 0;
    for (const entry of this.kinds.values()) total += entry.count;
    return total;
  }

  toJSON(): Record<string, { count: number; last: string }> {
    return Object.fromEntries(this.kinds);
  }
}

export interface ProcessSample {
  /** CPU time (user + system, all threads) over wall time since the previous sample, in % of one core. */
  cpuPercent: number;
  rssMiB: number;
  heapUsedMiB: number;
  /** Event-loop delay since the previous sample: how late the wheel's ticks (and everything else) ran. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

const MIB = 1024 * 1024;
/** The event-loop delay histogram samples every this many ms; its values include this interval. */
const LOOP_DELAY_RESOLUTION_MS = 10;

/** This process's own cost, sampled at each report. */
export class ProcessGauge {
  readonly startedAt = Date.now();
  readonly baselineRssMiB = process.memoryUsage.rss() / MIB;
  private readonly cpuAtStart = process.cpuUsage();
  private lastCpu = this.cpuAtStart;
  private lastAt = this.startedAt;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });

  constructor() {
    this.loopDelay.enable();
  }

  sample(now = Date.now()): ProcessSample {
    const cpu = process.cpuUsage();
    const usedUs = cpu.user - this.lastCpu.user + (cpu.system - this.lastCpu.system);
    const wallUs = Math.max(1, (now - this.lastAt) * 1000);
    this.lastCpu = cpu;
    this.lastAt = now;
    const memory = process.memoryUsage();
    const sample = {
      cpuPercent: round((usedUs / wallUs) * 100),
      rssMiB: round(memory.rss / MIB),
      heapUsedMiB: round(memory.heapUsed / MIB),
      loopDelayP99Ms: lateness(this.loopDelay.percentile(99)),
      loopDelayMaxMs: lateness(this.loopDelay.max),
    };
    this.loopDelay.reset();
    return sample;
  }

  /** CPU % of one core over the whole run. */
  averageCpuPercent(now = Date.now()): number {
    const cpu = process.cpuUsage(this.cpuAtStart);
    return round(((cpu.user + cpu.system) / Math.max(1, (now - this.startedAt) * 1000)) * 100);
  }

  /** The largest resident set of the run (the kernel's high-water mark). */
  peakRssMiB(): number {
    return round((process.resourceUsage().maxRSS * 1024) / MIB);
  }

  stop(): void {
    this.loopDelay.disable();
  }
}

/** A histogram value (ns, the sampling interval included) as how late the loop was, in ms. */
function lateness(ns: number): number {
  return round(Math.max(0, ns / 1e6 - LOOP_DELAY_RESOLUTION_MS));
}

export function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}
