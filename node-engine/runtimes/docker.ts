import type Dockerode from 'dockerode';
import { backoffDelay, type Logger } from '../../shared/index.js';
import { containerCreateOptions } from './docker-config.js';
import { demuxDockerLogs } from './docker-logs.js';
import { pullImage } from './docker-pull.js';
import {
  type DeployedWorkload,
  type DeployProgress,
  type InstanceSpec,
  type Runtime,
  RuntimeError,
  type RuntimeHandle,
  type RuntimeWorkload,
  type WorkloadState,
  type WorkloadStats,
  workloadName,
} from './runtime.js';

export interface DockerRuntimeOptions {
  docker: Dockerode;
  nodeId: string;
  logger: Logger;
  /** Seconds a container gets between SIGTERM and SIGKILL when removed. */
  stopTimeoutS?: number;
  /** Longest a pull may take before the instance fails. */
  pullTimeoutMs?: number;
}

interface InspectedState {
  dockerState: string;
  exitCode?: number;
  startedAt?: number;
  finishedAt?: number;
  pid?: number;
}

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number }).statusCode;
}

function message(error: unknown): string {
  const json = (error as { json?: { message?: string } }).json;
  return json?.message ?? (error as Error).message ?? String(error);
}

function dockerTime(value: string | undefined): number | undefined {
  if (!value || value.startsWith('0001-')) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}

function workloadState(dockerState: string): WorkloadState {
  if (dockerState === 'running' || dockerState === 'restarting' || dockerState === 'paused') return 'running';
  if (dockerState === 'exited' || dockerState === 'dead') return 'exited';
  if (dockerState === 'created') return 'created';
  return 'other';
}

/** Runs instances as Docker containers, found again by their `edge.node` label. */
export class DockerRuntime implements Runtime {
  readonly technology = 'docker' as const;
  private readonly docker: Dockerode;
  private readonly nodeId: string;
  private readonly logger: Logger;
  private readonly stopTimeoutS: number;
  private readonly pullTimeoutMs: number;
  /** Inspect results by container id, refreshed only when the listed state changes (list stays one call). */
  private readonly inspected = new Map<string, InspectedState>();
  /** The previous stats sample per container, for CPU percent from one-shot stats. */
  private readonly cpuSamples = new Map<string, { container: number; system: number }>();

  constructor(options: DockerRuntimeOptions) {
    this.docker = options.docker;
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ runtime: 'docker' });
    this.stopTimeoutS = options.stopTimeoutS ?? 10;
    this.pullTimeoutMs = options.pullTimeoutMs ?? 10 * 60_000;
  }

  async available(): Promise<boolean> {
    try {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('docker did not answer within 3 s')), 3000);
      });
      await Promise.race([this.docker.ping(), timeout]).finally(() => clearTimeout(timer));
      return true;
    } catch {
      return false;
    }
  }

  async deploy(spec: InstanceSpec, progress: DeployProgress): Promise<DeployedWorkload> {
    await this.ensureImage(spec.job.image, progress);
    progress('creating', `creating container ${workloadName(spec)}`);
    let container: Dockerode.Container;
    try {
      container = await this.docker.createContainer(containerCreateOptions(spec));
    } catch (error) {
      if (statusCode(error) === 409) {
        // A container of this very instance and generation exists (a crash between create and start): reuse it.
        container = this.docker.getContainer(workloadName(spec));
      } else {
        throw new RuntimeError('create_failed', `docker refused to create the container: ${message(error)}`);
      }
    }
    try {
      await container.start();
    } catch (error) {
      if (statusCode(error) !== 304) {
        await container.remove({ force: true }).catch(() => undefined);
        throw new RuntimeError('start_failed', `docker could not start the container: ${message(error)}`);
      }
    }
    const info = await container.inspect();
    const startedAt = dockerTime(info.State.StartedAt);
    return {
      handle: { technology: 'docker', id: info.Id },
      ...(startedAt !== undefined ? { startedAt } : {}),
    };
  }

  private async ensureImage(image: string, progress: DeployProgress): Promise<void> {
    try {
      await this.docker.getImage(image).inspect();
      return;
    } catch (error) {
      if (statusCode(error) !== 404) {
        throw new RuntimeError('image_pull_failed', `cannot inspect image ${image}: ${message(error)}`);
      }
    }
    progress('pulling', `pulling image ${image}`);
    try {
      await pullImage(this.docker, image, this.pullTimeoutMs, (line) =>
        this.logger.info({ image, progress: line }, 'pulling image'),
      );
    } catch (error) {
      throw new RuntimeError('image_pull_failed', `cannot pull image ${image}: ${message(error)}`);
    }
  }

  async start(handle: RuntimeHandle): Promise<number | undefined> {
    const container = this.docker.getContainer(handle.id);
    this.inspected.delete(handle.id);
    try {
      await container.start();
    } catch (error) {
      if (statusCode(error) === 304) return undefined;
      if (statusCode(error) === 404) throw new RuntimeError('not_found', `container ${handle.id} is gone`);
      throw new RuntimeError('start_failed', `docker could not start the container: ${message(error)}`);
    }
    return dockerTime((await container.inspect()).State.StartedAt);
  }

  async remove(handle: RuntimeHandle): Promise<void> {
    const container = this.docker.getContainer(handle.id);
    try {
      await container.stop({ t: this.stopTimeoutS });
    } catch (error) {
      const code = statusCode(error);
      if (code !== 304 && code !== 404)
        this.logger.warn({ container: handle.id, err: message(error) }, 'stop failed');
    }
    try {
      await container.remove({ force: true });
    } catch (error) {
      if (statusCode(error) !== 404 && statusCode(error) !== 409) throw error;
    }
    this.inspected.delete(handle.id);
    this.cpuSamples.delete(handle.id);
  }

  async list(): Promise<RuntimeWorkload[]> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: { label: [`edge.node=${this.nodeId}`] },
    });
    const seen = new Set<string>();
    const workloads: RuntimeWorkload[] = [];
    for (const info of containers) {
      const labels = info.Labels ?? {};
      const instance = Number(labels['edge.instance']);
      const generation = Number(labels['edge.generation']);
      const jobId = labels['edge.job'];
      if (!jobId || !Number.isInteger(instance) || !Number.isInteger(generation)) continue;
      seen.add(info.Id);
      const details = await this.details(info.Id, info.State);
      if (!details) continue;
      workloads.push({
        handle: { technology: 'docker', id: info.Id },
        jobId,
        jobName: labels['edge.job.name'] ?? '',
        instance,
        generation,
        state: workloadState(details.dockerState),
        ...(details.exitCode !== undefined ? { exitCode: details.exitCode } : {}),
        ...(details.startedAt !== undefined ? { startedAt: details.startedAt } : {}),
        ...(details.finishedAt !== undefined ? { finishedAt: details.finishedAt } : {}),
        ...(details.pid !== undefined ? { pid: details.pid } : {}),
      });
    }
    for (const id of this.inspected.keys()) if (!seen.has(id)) this.inspected.delete(id);
    return workloads;
  }

  private async details(id: string, listedState: string): Promise<InspectedState | undefined> {
    const cached = this.inspected.get(id);
    if (cached && cached.dockerState === listedState) return cached;
    try {
      const info = await this.docker.getContainer(id).inspect();
      const state: InspectedState = { dockerState: info.State.Status };
      const startedAt = dockerTime(info.State.StartedAt);
      const finishedAt = dockerTime(info.State.FinishedAt);
      if (startedAt !== undefined) state.startedAt = startedAt;
      if (info.State.Pid > 0) state.pid = info.State.Pid;
      if (workloadState(info.State.Status) === 'exited') {
        state.exitCode = info.State.ExitCode;
        if (finishedAt !== undefined) state.finishedAt = finishedAt;
      }
      this.inspected.set(id, state);
      return state;
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async stats(handle: RuntimeHandle): Promise<WorkloadStats | null> {
    try {
      // One-shot: Docker answers at once instead of waiting a second for a second sample; CPU percent comes
      // from the difference to our previous sample.
      const stats = await this.docker.getContainer(handle.id).stats({ stream: false, 'one-shot': true });
      const cpu = {
        container: stats.cpu_stats.cpu_usage.total_usage,
        system: stats.cpu_stats.system_cpu_usage ?? 0,
      };
      const previous = this.cpuSamples.get(handle.id);
      this.cpuSamples.set(handle.id, cpu);
      const online = stats.cpu_stats.online_cpus ?? 1;
      let cpuPercent = 0;
      if (previous && cpu.system > previous.system && cpu.container >= previous.container) {
        cpuPercent = ((cpu.container - previous.container) / (cpu.system - previous.system)) * online * 100;
      }
      const memory = stats.memory_stats as { usage?: number; stats?: Record<string, number> };
      const cache = memory.stats?.inactive_file ?? memory.stats?.total_inactive_file ?? 0;
      return { cpuPercent, memoryBytes: Math.max(0, (memory.usage ?? 0) - cache) };
    } catch (error) {
      if (statusCode(error) === 404 || statusCode(error) === 409) return null;
      throw error;
    }
  }

  async logs(handle: RuntimeHandle, tailLines = 200): Promise<string> {
    const buffer = (await this.docker
      .getContainer(handle.id)
      .logs({ stdout: true, stderr: true, tail: tailLines, follow: false })) as unknown as Buffer;
    return demuxDockerLogs(buffer);
  }

  watch(onChange: () => void): () => void {
    let stopped = false;
    let attempt = 0;
    let stream: NodeJS.ReadableStream | undefined;
    let timer: NodeJS.Timeout | undefined;
    const subscribe = async () => {
      try {
        stream = await this.docker.getEvents({
          filters: {
            type: ['container'],
            label: [`edge.node=${this.nodeId}`],
            event: ['die', 'destroy', 'oom', 'start'],
          },
        });
      } catch (error) {
        retry(error);
        return;
      }
      if (stopped) {
        (stream as unknown as { destroy(): void }).destroy();
        return;
      }
      attempt = 0;
      stream.on('data', () => {
        // Something changed behind a cached inspect (a quick exit after a restart): read every state afresh.
        this.inspected.clear();
        onChange();
      });
      stream.on('error', (error) => retry(error));
      stream.on('end', () => retry(new Error('event stream ended')));
    };
    const retry = (error: unknown) => {
      if (stopped || timer) return;
      const delay = backoffDelay(attempt++, 500, 30_000);
      this.logger.warn({ err: message(error), retryInMs: delay }, 'docker event stream lost');
      timer = setTimeout(() => {
        timer = undefined;
        void subscribe();
      }, delay);
    };
    void subscribe();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      (stream as unknown as { destroy?(): void } | undefined)?.destroy?.();
    };
  }
}
