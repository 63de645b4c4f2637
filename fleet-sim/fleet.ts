import type { NodeInfo } from '../shared/node.js';
import { VERSION } from '../shared/version.js';
import { type FleetConfig, workerName } from './config.js';
import { ErrorBook, type LatencySummary, LatencyWindow, newCounters } from './fleet-stats.js';
import { type FleetLink, HollowWorker } from './hollow-worker.js';
import type { IdentityBook } from './identity-book.js';
import { TimerWheel } from './timer-wheel.js';

/** What every hollow worker announces besides its name: a modest amd64/arm64 box with Docker. */
const HOLLOW_CPUS = 4;
const HOLLOW_MEMORY_BYTES = 8 * 1024 ** 3;
/** Registrations not yet answered, at most: one second's worth at the connect rate. */
const IN_FLIGHT_SECONDS = 1;

function hollowArch(): NodeInfo['arch'] {
  if (process.arch === 'arm64') return 'arm64';
  if (process.arch === 'arm') return 'arm-7';
  return 'amd64';
}

/** Where the fleet stands: the counters, and gauges counted over the workers. */
export interface FleetSnapshot {
  workers: number;
  registered: number;
  mqttConnected: number;
  waitingToRegister: number;
  registering: number;
  instancesRunning: number;
  telemetrySent: number;
  jobResourcesSent: number;
  commandsReceived: number;
  commandsDuplicate: number;
  commandsStale: number;
  commandsInvalid: number;
  acksSent: number;
  statusReportsSent: number;
  registrations: number;
  mqttConnects: number;
  reconnects: number;
  reregistrations: number;
  errors: number;
  commandLatencyMs: LatencySummary;
  runningLatencyMs: LatencySummary;
  errorKinds: ReturnType<ErrorBook['toJSON']>;
}

/**
 * The hollow workers of one process and what they share: one timer wheel for telemetry, retries and start
 * delays; registrations paced by a token bucket refilled on each tick; counters for the stats lines.
 */
export class Fleet implements FleetLink {
  readonly wheel: TimerWheel;
  readonly counters = newCounters();
  readonly errors = new ErrorBook();
  readonly commandLatency = new LatencyWindow();
  readonly runningLatency = new LatencyWindow();
  readonly workers: HollowWorker[] = [];
  readonly onPublished = (error?: Error): void => {
    if (!error) return;
    this.errors.note('publish', error.message);
  };
  /** Workers waiting for their turn to register, first come first served (`queueHead` is the next). */
  private queue: HollowWorker[] = [];
  private queueHead = 0;
  private tokens = 0;
  private refilledAt = Date.now();
  private inFlight = 0;
  private readonly burst: number;
  private readonly maxInFlight: number;

  constructor(
    readonly config: FleetConfig,
    readonly identities: IdentityBook,
  ) {
    this.wheel = new TimerWheel(config.telemetryIntervalMs, (now) => {
      this.admit(now);
      identities.saveSoon(now);
    });
    identities.onError = (error) => this.errors.note('identities-file', error.message);
    this.burst = Math.max(1, config.connectRate / 10);
    this.maxInFlight = Math.max(1, Math.round(config.connectRate * IN_FLIGHT_SECONDS));
    const base: Omit<NodeInfo, 'name'> = {
      arch: hollowArch(),
      os: 'Hollow Linux (edge-fleet-sim)',
      cpus: HOLLOW_CPUS,
      memoryBytes: HOLLOW_MEMORY_BYTES,
      gpus: [],
      sensors: [],
      runtimes: ['docker'],
      labels: { hollow: 'true' },
      version: VERSION,
      overlay: false,
    };
    for (let index = 0; index < config.workers; index++) {
      const name = workerName(config.namePrefix, index, config.workers);
      this.workers.push(new HollowWorker({ ...base, name }, this));
    }
  }

  start(): void {
    for (const worker of this.workers) worker.start();
    this.wheel.start();
  }

  /** Stops the wheel, then every worker says `offline` and closes; resolves when all did and identities are saved. */
  async stop(): Promise<void> {
    this.wheel.stop();
    await Promise.allSettled([...this.workers.map((worker) => worker.stop()), this.identities.save()]);
  }

  requestRegistration(worker: HollowWorker): void {
    this.queue.push(worker);
  }

  registrationEnded(): void {
    this.inFlight--;
  }

  /** On every tick: lets as many queued registrations go as the connect rate and the in-flight cap allow. */
  private admit(now: number): void {
    this.tokens = Math.min(
      this.burst,
      this.tokens + ((now - this.refilledAt) * this.config.connectRate) / 1000,
    );
    this.refilledAt = now;
    while (this.tokens >= 1 && this.inFlight < this.maxInFlight && this.queueHead < this.queue.length) {
      const worker = this.queue[this.queueHead++]!;
      this.tokens--;
      this.inFlight++;
      worker.register();
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  connectedCount(): number {
    let connected = 0;
    for (const worker of this.workers) if (worker.connected) connected++;
    return connected;
  }

  snapshot(): FleetSnapshot {
    let registered = 0;
    let mqttConnected = 0;
    let instancesRunning = 0;
    for (const worker of this.workers) {
      if (worker.state === 'registered') registered++;
      if (worker.connected) mqttConnected++;
      instancesRunning += worker.instances.running;
    }
    const c = this.counters;
    return {
      workers: this.workers.length,
      registered,
      mqttConnected,
      waitingToRegister: this.queue.length - this.queueHead,
      registering: this.inFlight,
      instancesRunning,
      telemetrySent: c.telemetrySent,
      jobResourcesSent: c.jobResourcesSent,
      commandsReceived: c.commandsReceived,
      commandsDuplicate: c.commandsDuplicate,
      commandsStale: c.commandsStale,
      commandsInvalid: c.commandsInvalid,
      acksSent: c.acksSent,
      statusReportsSent: c.statusReportsSent,
      registrations: c.registrations,
      mqttConnects: c.mqttConnects,
      reconnects: c.mqttReconnects,
      reregistrations: c.reregistrations,
      errors: this.errors.total,
      commandLatencyMs: this.commandLatency.summary(),
      runningLatencyMs: this.runningLatency.summary(),
      errorKinds: this.errors.toJSON(),
    };
  }
}
