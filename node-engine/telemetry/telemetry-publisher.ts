import { availableParallelism } from 'node:os';
import type { JobResources, Logger, NodeTelemetry, SensorConfig, Technology } from '../../shared/index.js';
import type { InstanceStatusBook } from '../instance-status.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { GpuMonitor } from './gpus.js';
import { readSensors } from './sensors.js';
import { readSystemMetrics } from './system-metrics.js';

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

/** Publishes `nodes/<id>/information` and `nodes/<id>/jobs/resources` every interval. */
export class TelemetryPublisher {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private intervalMs: number;
  private readonly cores = availableParallelism();
  private readonly runtimes: Map<Technology, Runtime>;
  private readonly logger: Logger;

  constructor(private readonly options: TelemetryPublisherOptions) {
    this.intervalMs = options.intervalMs;
    this.runtimes = new Map(options.runtimes.map((runtime) => [runtime.technology, runtime]));
    this.logger = options.logger.child({ part: 'telemetry' });
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
    if (this.busy) return;
    this.busy = true;
    try {
      const [telemetry, resources] = await Promise.all([this.collect(), this.collectResources()]);
      this.options.publishTelemetry(telemetry);
      this.options.publishResources(resources);
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'telemetry collection failed');
    } finally {
      this.busy = false;
    }
  }

  async collect(now = Date.now()): Promise<NodeTelemetry> {
    const [system, gpus, sensors] = await Promise.all([
      readSystemMetrics(this.options.dataDir, this.cores),
      this.options.gpus.read(),
      readSensors(this.options.sensors, now),
    ]);
    const instances = this.options.statuses
      .all()
      .map(({ job, instance, generation, status }) => ({ job, instance, generation, status }));
    return { nodeId: this.options.nodeId, ts: now, ...system, gpus, sensors, instances };
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
