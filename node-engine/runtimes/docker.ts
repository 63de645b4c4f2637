import { get as httpGet } from 'node:http';
import type { Readable } from 'node:stream';
import type Dockerode from 'dockerode';
import { backoffDelay, type HealthCheck, type Logger } from '../../shared/index.js';
import { withDeadline } from '../deadline.js';
import { containerCreateOptions } from './docker-config.js';
import { DockerLogSource } from './docker-log-source.js';
import { demuxDockerLogs } from './docker-logs.js';
import { pullImage } from './docker-pull.js';
import { lastLine, probeHttp } from './health-probes.js';
import type { LogLimits } from './log-limits.js';
import type { LogReadOptions, LogSource } from './log-source.js';
import {
  type DeployedWorkload,
  type DeployProgress,
  type InstanceSpec,
  type Runtime,
  RuntimeError,
  type RuntimeHandle,
  type RuntimeProbe,
  type RuntimeWorkload,
  readWorkloadDescription,
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
  /** A pull that makes no progress for this long fails (and is tried again after its back-off): default 60 s. */
  pullStallMs?: number;
  /** Longest any other Docker call may take (a hung dockerd must not hold the reconcile pass): default 30 s. */
  callTimeoutMs?: number;
  /** The node's log limits (a job's `logs` block overrides them). */
  logLimits?: LogLimits;
}

/** How long a ping may take when probing whether dockerd answers. */
const PING_TIMEOUT_MS = 3000;

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
  private readonly pullStallMs: number;
  private readonly callTimeoutMs: number;
  private readonly logLimits: LogLimits | undefined;
  /** Inspect results by container id, refreshed only when the listed state changes (list stays one call). */
  private readonly inspected = new Map<string, InspectedState>();
  /** The previous stats sample per container, for CPU percent from one-shot stats. */
  private readonly cpuSamples = new Map<string, { container: number; system: number }>();

  constructor(options: DockerRuntimeOptions) {
    this.docker = options.docker;
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ runtime: 'docker' });
    this.stopTimeoutS = options.stopTimeoutS ?? 10;
    this.pullStallMs = options.pullStallMs ?? 60_000;
    this.callTimeoutMs = options.callTimeoutMs ?? 30_000;
    this.logLimits = options.logLimits;
  }

  /** One Docker API call, given up after `timeoutMs` (the default call timeout) with a DeadlineError. */
  private call<T>(
    what: string,
    run: (abortSignal: AbortSignal) => Promise<T>,
    timeoutMs = this.callTimeoutMs,
  ) {
    return withDeadline(`docker ${what}`, timeoutMs, run);
  }

  /**
   * Pings dockerd on a connection of its own: a kept-alive connection is still served for a while after dockerd
   * closed its socket on its way down, and this must see the outage from its first moment. A socket that refuses
   * or is gone is `down`; a ping that times out or fails otherwise is `unresponsive` (busy, or hung).
   */
  probe(): Promise<RuntimeProbe> {
    const socketPath = (this.docker.modem as { socketPath?: string }).socketPath;
    if (!socketPath) return Promise.resolve('down');
    return new Promise((resolve) => {
      const request = httpGet(
        { socketPath, path: '/_ping', agent: false, timeout: PING_TIMEOUT_MS },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200 ? 'up' : 'unresponsive');
        },
      );
      request.on('timeout', () => request.destroy(new Error('timeout')));
      request.on('error', (error: NodeJS.ErrnoException) =>
        resolve(error.code === 'ECONNREFUSED' || error.code === 'ENOENT' ? 'down' : 'unresponsive'),
      );
    });
  }

  async deploy(spec: InstanceSpec, progress: DeployProgress): Promise<DeployedWorkload> {
    await this.ensureImage(spec.job.image, progress);
    progress('creating', `creating container ${workloadName(spec)}`);
    let container: Dockerode.Container;
    try {
      const options = containerCreateOptions(spec, this.logLimits);
      container = await this.call('create', (abortSignal) =>
        this.docker.createContainer({ ...options, abortSignal }),
      );
    } catch (error) {
      if (statusCode(error) === 409) {
        // A container of this very instance and generation exists (a crash between create and start): reuse it.
        container = this.docker.getContainer(workloadName(spec));
      } else {
        throw new RuntimeError('create_failed', `docker refused to create the container: ${message(error)}`);
      }
    }
    try {
      await this.call('start', (abortSignal) => container.start({ abortSignal }));
    } catch (error) {
      if (statusCode(error) !== 304) {
        await this.call('remove', (abortSignal) => container.remove({ force: true, abortSignal })).catch(
          () => undefined,
        );
        throw new RuntimeError('start_failed', `docker could not start the container: ${message(error)}`);
      }
    }
    const info = await this.call('inspect', (abortSignal) => container.inspect({ abortSignal }));
    const startedAt = dockerTime(info.State.StartedAt);
    return {
      handle: { technology: 'docker', id: info.Id },
      ...(startedAt !== undefined ? { startedAt } : {}),
    };
  }

  private async ensureImage(image: string, progress: DeployProgress): Promise<void> {
    try {
      // No signal: dockerode does not pass one for images; the deadline still ends the wait.
      await this.call('image inspect', () => this.docker.getImage(image).inspect());
      return;
    } catch (error) {
      // Not a pull failure: Docker did not answer (the deploy is tried again after its back-off).
      if (statusCode(error) !== 404) throw new Error(`cannot inspect image ${image}: ${message(error)}`);
    }
    progress('pulling', `pulling image ${image}`);
    this.logger.info({ image }, 'pulling image');
    try {
      await pullImage(this.docker, image, this.pullStallMs, (line, measure) => {
        progress('pulling', `${line} (image ${image})`, measure);
        this.logger.debug({ image, progress: line }, 'pulling image');
      });
    } catch (error) {
      throw new RuntimeError('image_pull_failed', `cannot pull image ${image}: ${message(error)}`);
    }
    this.logger.info({ image }, 'image pulled');
  }

  async start(handle: RuntimeHandle): Promise<number | undefined> {
    const container = this.docker.getContainer(handle.id);
    this.inspected.delete(handle.id);
    try {
      await this.call('start', (abortSignal) => container.start({ abortSignal }));
    } catch (error) {
      if (statusCode(error) === 304) return undefined;
      if (statusCode(error) === 404) throw new RuntimeError('not_found', `container ${handle.id} is gone`);
      throw new RuntimeError('start_failed', `docker could not start the container: ${message(error)}`);
    }
    const info = await this.call('inspect', (abortSignal) => container.inspect({ abortSignal }));
    return dockerTime(info.State.StartedAt);
  }

  async remove(handle: RuntimeHandle): Promise<void> {
    const container = this.docker.getContainer(handle.id);
    try {
      // The container's grace period, then the call's own timeout.
      await this.call(
        'stop',
        (abortSignal) => container.stop({ t: this.stopTimeoutS, abortSignal }),
        this.stopTimeoutS * 1000 + this.callTimeoutMs,
      );
    } catch (error) {
      const code = statusCode(error);
      if (code !== 304 && code !== 404)
        this.logger.warn({ container: handle.id, err: message(error) }, 'stop failed');
    }
    try {
      await this.call('remove', (abortSignal) => container.remove({ force: true, abortSignal }));
    } catch (error) {
      if (statusCode(error) !== 404 && statusCode(error) !== 409) throw error;
    }
    this.inspected.delete(handle.id);
    this.cpuSamples.delete(handle.id);
  }

  async list(): Promise<RuntimeWorkload[]> {
    const containers = await this.call('list', (abortSignal) =>
      this.docker.listContainers({
        all: true,
        filters: { label: [`edge.node=${this.nodeId}`] },
        abortSignal,
      }),
    );
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
      const description = readWorkloadDescription(labels['edge.spec']);
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
        ...(description ? { description } : {}),
      });
    }
    for (const id of this.inspected.keys()) if (!seen.has(id)) this.inspected.delete(id);
    return workloads;
  }

  private async details(id: string, listedState: string): Promise<InspectedState | undefined> {
    const cached = this.inspected.get(id);
    if (cached && cached.dockerState === listedState) return cached;
    try {
      const info = await this.call('inspect', (abortSignal) =>
        this.docker.getContainer(id).inspect({ abortSignal }),
      );
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
      // dockerode passes the signal on; its types do not list it for stats.
      const stats = await this.call('stats', (abortSignal) => {
        const options: { stream: false; 'one-shot': boolean } = { stream: false, 'one-shot': true };
        return this.docker.getContainer(handle.id).stats(Object.assign(options, { abortSignal }));
      });
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
    const buffer = (await this.call('logs', (abortSignal) =>
      this.docker
        .getContainer(handle.id)
        .logs({ stdout: true, stderr: true, tail: tailLines, follow: false, abortSignal }),
    )) as unknown as Buffer;
    return demuxDockerLogs(buffer);
  }

  async checkHealth(handle: RuntimeHandle, _spec: InstanceSpec, check: HealthCheck): Promise<string | null> {
    const container = this.docker.getContainer(handle.id);
    try {
      if (check.http) {
        const info = await this.call('inspect', (abortSignal) => container.inspect({ abortSignal }));
        const address = Object.values(info.NetworkSettings.Networks ?? {}).find(
          (network) => network.IPAddress,
        )?.IPAddress;
        if (!address) return 'the container has no address to check';
        return await probeHttp(address, check.http.port, check.http.path, check.timeoutMs);
      }
      return await withDeadline('health check', check.timeoutMs, async () => {
        const exec = await container.exec({ Cmd: check.command!, AttachStdout: true, AttachStderr: true });
        const stream = await exec.start({ hijack: true, stdin: false });
        const chunks: Buffer[] = [];
        let kept = 0;
        await new Promise<void>((resolve, reject) => {
          stream.on('data', (chunk: Buffer) => {
            // The tail is what tells why; a chatty check keeps at most the last 64 KiB.
            chunks.push(chunk);
            kept += chunk.length;
            while (kept > 65_536 && chunks.length > 1) kept -= chunks.shift()!.length;
          });
          stream.once('end', resolve);
          stream.once('error', reject);
        });
        const { ExitCode } = await exec.inspect();
        if (ExitCode === 0) return null;
        const said = lastLine(demuxDockerLogs(Buffer.concat(chunks)));
        return `exit ${ExitCode ?? 'unknown'}${said ? `: ${said}` : ''}`;
      });
    } catch (error) {
      return `cannot run the check: ${message(error)}`;
    }
  }

  /**
   * Docker's logs endpoint as a stream, follow or not (dockerode would read a whole answer without `follow` into
   * memory): stdout and stderr as asked, `tail` lines, `since` in whole seconds (rounded down: a little more,
   * never less).
   */
  async openLogs(handle: RuntimeHandle, options: LogReadOptions): Promise<LogSource> {
    const query = {
      follow: options.follow,
      stdout: options.streams !== 'stderr',
      stderr: options.streams !== 'stdout',
      tail: options.tail === undefined ? 'all' : String(options.tail),
      ...(options.since !== undefined ? { since: Math.floor(options.since / 1000) } : {}),
    };
    try {
      const response = await this.call(
        'logs',
        (abortSignal) =>
          new Promise<Readable>((resolve, reject) => {
            this.docker.modem.dial(
              {
                path: `/containers/${encodeURIComponent(handle.id)}/logs?`,
                method: 'GET',
                isStream: true,
                abortSignal,
                statusCodes: { 200: true, 404: 'no such container', 500: 'server error' },
                options: query,
              },
              (error, stream) => (error ? reject(error) : resolve(stream as Readable)),
            );
          }),
      );
      return new DockerLogSource(response);
    } catch (error) {
      if (statusCode(error) === 404) throw new RuntimeError('not_found', `container ${handle.id} is gone`);
      throw error;
    }
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
