import { availableParallelism } from 'node:os';
import type {
  JobResources,
  Logger,
  NodeTelemetry,
  SensorConfig,
  SensorReading,
  Technology,
} from '../../shared/index.js';
import type { InstanceStatusBook } from '../instance-status.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { GpuMonitor } from './gpus.js';
import { Sampler } from './sampler.js';
import { readSensors } from './sensors.js';
import { SystemMetrics } from './system-metrics.js';

/** Sensor files live on buses that can wedge: a read that takes longer is given up, the last values kept. */
const SENSORS_TIMEOUT_MS = 2000;

export interface TelemetryPublisherOptions {
  nodeId: string;
  dataDir: string;
  gpus: GpuMonitor;
  sensors: SensorConfig[];
  statuses: InstanceStatusBook;
  runtimes: Runtime[];
  intervalMs: number;
  publishTelemetry: (telemetry: NodeTelemetry) => void;
  publishResources: (resources: JobResources) => void;
  logger: Logger;
}

/**
 * Publishes `nodes/<id>/information` and `nodes/<id>/jobs/resources` every interval. Nothing slow holds back the
 * telemetry message (it is what keeps the node online): GPUs and sensors are read in the background and the
 * message carries their latest values, marked `stale` when this round's read did not come in time; per-container
 * stats (Docker calls) go out on their own, when they are ready.
 */
export class TelemetryPublisher {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private resourcesBusy = false;
  private readonly sensors: Sampler<SensorReading[]>;
  private intervalMs: number;
  private readonly runtimes: Map<Technology, Runtime>;
  private readonly logger: Logger;
  private readonly system: SystemMetrics;

  constructor(private readonly options: TelemetryPublisherOptions) {
    this.intervalMs = options.intervalMs;
    this.system = new SystemMetrics(options.dataDir, availableParallelism());
    this.runtimes = new Map(options.runtimes.map((runtime) => [runtime.technology, runtime]));
    this.logger = options.logger.child({ part: 'telemetry' });
    this.sensors = new Sampler(
      'sensors',
      () => readSensors(options.sensors),
      SENSORS_TIMEOUT_MS,
      [],
      (error) => this.logger.warn({ err: error.message }, 'sensor reading failed'),
    );
  }

  start(): void {
    this.stop();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    void this.tick();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  setInterval(intervalMs: number): void {
    if (intervalMs === this.intervalMs) return;
    this.intervalMs = intervalMs;
    if (this.timer) this.start();
  }

  /** A tick that takes longer than the interval makes the next one skip rather than pile up. */
  private async tick(): Promise<void> {
    this.publishResourcesWhenReady();
    if (this.busy) return;
    this.busy = true;
    try {
      this.options.publishTelemetry(await this.collect());
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'telemetry collection failed');
    } finally {
      this.busy = false;
    }
  }

  /** Container stats wait on the runtimes (a busy dockerd): one round at a time, never in the telemetry's way. */
  private publishResourcesWhenReady(): void {
    if (this.resourcesBusy) return;
    this.resourcesBusy = true;
    this.collectResources()
      .then((resources) => this.options.publishResources(resources))
      .catch((error: Error) => this.logger.warn({ err: error.message }, 'resource collection failed'))
      .finally(() => {
        this.resourcesBusy = false;
      });
  }

  async collect(now = Date.now()): Promise<NodeTelemetry> {
    // GPUs and sensors get a fifth of the interval to answer; values older than an interval did not come this
    // round and are marked stale.
    const waitMs = Math.min(1000, this.intervalMs / 5);
    const [system, gpus, sensors] = await Promise.all([
      this.system.read(),
      this.options.gpus.read(waitMs, this.intervalMs),
      this.sensors.sample(waitMs, this.intervalMs),
    ]);
    const readings = sensors.stale
      ? sensors.value.map((reading) => ({ ...reading, stale: true }))
      : sensors.value;
    const instances = this.options.statuses.all().map(({ job, instance, generation, status, health }) => ({
      job,
      instance,
      generation,
      status,
      ...(health !== undefined ? { health } : {}),
    }));
    return { nodeId: this.options.nodeId, ts: now, ...system, gpus, sensors: readings, instances };
  }

  async collectResources(now = Date.now()): Promise<JobResources> {
    const running = this.options.statuses
      .all()
      .filter((state) => state.status === 'running' && state.containerId);
    const instances = await Promise.all(
      running.map(async (state) => {
        const runtime = this.runtimes.get(state.technology);
        const stats = await runtime
          ?.stats({ technology: state.technology, id: state.containerId ?? '' })
          .catch(() => null);
        return stats ? { job: state.job, instance: state.instance, ...stats } : undefined;
      }),
    );
    return { ts: now, instances: instances.filter((entry) => entry !== undefined) };
  }
}
