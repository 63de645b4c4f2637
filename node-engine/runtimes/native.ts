import { spawn } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { access, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import type { HealthCheck, Logger } from '../../shared/index.js';
import { monotonicMs } from '../../shared/monotonic-clock.js';
import { FollowedOutput } from './followed-output.js';
import { probeCommand, probeHttp } from './health-probes.js';
import { DEFAULT_LOG_LIMITS, type LogLimits, logLimitsOf, rotateIfLarger } from './log-limits.js';
import type { LogReadOptions, LogSource } from './log-source.js';
import { planLimits, releaseLimits } from './native-limits.js';
import { NativeLogSource } from './native-log-source.js';
import { asUser, type RunAs } from './native-user.js';
import { cpuSeconds, isSameProcessAlive, readProcStat, residentBytes } from './proc.js';
import {
  type DeployedWorkload,
  type DeployProgress,
  describeWorkload,
  type InstanceSpec,
  type Runtime,
  RuntimeError,
  type RuntimeHandle,
  type RuntimeProbe,
  type RuntimeWorkload,
  readWorkloadDescription,
  type WorkloadStats,
  workloadName,
} from './runtime.js';

/** The pid file of a native workload: enough to find it again after the node engine restarts. */
const WorkloadFileSchema = z.object({
  nodeId: z.string(),
  jobId: z.string(),
  jobName: z.string(),
  instance: z.number().int(),
  generation: z.number().int(),
  pid: z.number().int(),
  startTime: z.number(),
  startedAt: z.number(),
  cgroupDirs: z.array(z.string()),
  /** The job and addresses it was made for (see WorkloadDescription); absent in files of older versions. */
  description: z.string().optional(),
});
type WorkloadFile = z.infer<typeof WorkloadFileSchema>;

const ExitFileSchema = z.object({ exitCode: z.number().int(), finishedAt: z.number() });

/** Joins the cgroups named before the workload, then execs it: limits hold from its first instruction. */
const JOIN_CGROUPS_AND_EXEC =
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"';

export interface NativeRuntimeOptions {
  nodeId: string;
  dataDir: string;
  /** Who workloads run as (`--native-user`); undefined: as this process. */
  runAs?: RunAs;
  logger: Logger;
  stopTimeoutMs?: number;
  /** The node's log limits (a job's `logs` block overrides them). */
  logLimits?: LogLimits;
  /** The cgroup filesystem (default /sys/fs/cgroup; tests hand a tree of their own). */
  cgroupRoot?: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `technology: native` instances as detached processes (image = absolute path of an executable,
 * command = its arguments), with output in files and a pid file per workload under `<data-dir>/native/`.
 */
export class NativeRuntime implements Runtime {
  readonly technology = 'native' as const;
  private readonly root: string;
  private readonly nodeId: string;
  private readonly logger: Logger;
  private readonly stopTimeoutMs: number;
  private readonly runAs: RunAs | undefined;
  private readonly logLimits: LogLimits;
  private readonly cgroupRoot: string | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly cpuSamples = new Map<string, { seconds: number; at: number }>();

  constructor(options: NativeRuntimeOptions) {
    this.root = join(options.dataDir, 'native');
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ runtime: 'native' });
    this.stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
    this.runAs = options.runAs;
    this.logLimits = options.logLimits ?? DEFAULT_LOG_LIMITS;
    this.cgroupRoot = options.cgroupRoot;
  }

  async probe(): Promise<RuntimeProbe> {
    return process.platform === 'linux' ? 'up' : 'down';
  }

  async deploy(spec: InstanceSpec, progress: DeployProgress): Promise<DeployedWorkload> {
    const name = workloadName(spec);
    progress('creating', `starting ${spec.job.image}`);
    const existing = await this.readWorkload(name);
    if (existing && isSameProcessAlive(existing.pid, existing.startTime)) {
      return { handle: { technology: 'native', id: name }, startedAt: existing.startedAt };
    }
    const startedAt = await this.spawnWorkload(name, spec);
    return { handle: { technology: 'native', id: name }, startedAt };
  }

  async start(handle: RuntimeHandle, spec: InstanceSpec): Promise<number | undefined> {
    return this.spawnWorkload(handle.id, spec);
  }

  private async spawnWorkload(name: string, spec: InstanceSpec): Promise<number> {
    const { job } = spec;
    try {
      await access(job.image, constants.X_OK);
      if (!(await stat(job.image)).isFile()) throw new Error('not a file');
    } catch {
      throw new RuntimeError('create_failed', `${job.image} is not an executable file on this node`);
    }
    const dir = join(this.root, name);
    await mkdir(dir, { recursive: true });
    await rm(join(dir, 'exit.json'), { force: true });
    const limits = await planLimits(name, job.resources, this.cgroupRoot);
    if (limits.unenforced.length > 0) {
      this.logger.warn(
        { job: job.name, limits: limits.unenforced },
        'limits not enforceable on this machine',
      );
    }
    // Its own folder is the workload's working directory, and its user's.
    if (this.runAs) await chown(dir, this.runAs.uid, this.runAs.gid);
    // Limits are joined as root (cgroup files, prlimit), then setpriv drops to the user and execs the workload.
    const workload = asUser(this.runAs, [job.image, ...(job.command ?? [])]);
    const argv =
      limits.cgroupProcs.length > 0
        ? [
            '/bin/sh',
            '-c',
            JOIN_CGROUPS_AND_EXEC,
            'edge-native',
            String(limits.cgroupProcs.length),
            ...limits.cgroupProcs,
            ...workload,
          ]
        : [...limits.prefix, ...workload];
    const stdout = openSync(join(dir, 'stdout.log'), 'a');
    const stderr = openSync(join(dir, 'stderr.log'), 'a');
    const child = spawn(argv[0] ?? job.image, argv.slice(1), {
      detached: true,
      stdio: ['ignore', stdout, stderr],
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...job.env },
    });
    closeSync(stdout);
    closeSync(stderr);
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (error) {
      await releaseLimits(limits.cgroupDirs);
      throw new RuntimeError('start_failed', `cannot start ${job.image}: ${(error as Error).message}`);
    }
    const pid = child.pid ?? 0;
    const startedAt = Date.now();
    child.once('exit', (code, signal) => {
      const exitCode = code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
      void writeFile(join(dir, 'exit.json'), JSON.stringify({ exitCode, finishedAt: Date.now() }))
        .catch(() => undefined)
        .finally(() => {
          for (const listener of this.listeners) listener();
        });
    });
    child.unref();
    const file: WorkloadFile = {
      nodeId: spec.nodeId,
      jobId: job.id,
      jobName: job.name,
      instance: spec.instance,
      generation: spec.generation,
      pid,
      startTime: readProcStat(pid)?.startTime ?? -1,
      startedAt,
      cgroupDirs: limits.cgroupDirs,
      description: JSON.stringify(describeWorkload(spec)),
    };
    await writeFileAtomic(join(dir, 'workload.json'), JSON.stringify(file));
    return startedAt;
  }

  private async readWorkload(name: string): Promise<WorkloadFile | undefined> {
    try {
      const parsed = WorkloadFileSchema.safeParse(
        JSON.parse(await readFile(join(this.root, name, 'workload.json'), 'utf8')),
      );
      return parsed.success && parsed.data.nodeId === this.nodeId ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  async remove(handle: RuntimeHandle): Promise<void> {
    const workload = await this.readWorkload(handle.id);
    if (workload && isSameProcessAlive(workload.pid, workload.startTime)) {
      // The workload leads its own process group (detached): signal the group to take its children too.
      this.signal(workload.pid, 'SIGTERM');
      const deadline = monotonicMs() + this.stopTimeoutMs;
      while (isSameProcessAlive(workload.pid, workload.startTime) && monotonicMs() < deadline)
        await sleep(50);
      if (isSameProcessAlive(workload.pid, workload.startTime)) this.signal(workload.pid, 'SIGKILL');
      while (isSameProcessAlive(workload.pid, workload.startTime)) await sleep(20);
    }
    if (workload) await releaseLimits(workload.cgroupDirs);
    await rm(join(this.root, handle.id), { recursive: true, force: true });
    this.cpuSamples.delete(handle.id);
  }

  private signal(pid: number, signal: NodeJS.Signals): void {
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        process.kill(pid, signal);
      } catch {}
    }
  }

  async list(): Promise<RuntimeWorkload[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const workloads: RuntimeWorkload[] = [];
    for (const name of names) {
      const file = await this.readWorkload(name);
      if (!file) continue;
      const alive = isSameProcessAlive(file.pid, file.startTime);
      const exit = alive ? undefined : await this.readExit(name);
      const description = readWorkloadDescription(file.description);
      const limits = description ? logLimitsOf(description.job, this.logLimits) : this.logLimits;
      await this.rotateLogs(name, limits);
      workloads.push({
        handle: { technology: 'native', id: name },
        jobId: file.jobId,
        jobName: file.jobName,
        instance: file.instance,
        generation: file.generation,
        state: alive ? 'running' : 'exited',
        startedAt: file.startedAt,
        ...(exit ? { exitCode: exit.exitCode, finishedAt: exit.finishedAt } : {}),
        ...(description ? { description } : {}),
      });
    }
    return workloads;
  }

  /** Output files past their size are rotated on every listing (each reconcile pass): see rotateIfLarger. */
  private async rotateLogs(name: string, limits: LogLimits): Promise<void> {
    for (const file of ['stdout.log', 'stderr.log']) {
      try {
        await rotateIfLarger(join(this.root, name, file), limits);
      } catch (error) {
        this.logger.warn({ workload: name, file, err: (error as Error).message }, 'cannot rotate output');
      }
    }
  }

  private async readExit(name: string): Promise<z.infer<typeof ExitFileSchema> | undefined> {
    try {
      const parsed = ExitFileSchema.safeParse(
        JSON.parse(await readFile(join(this.root, name, 'exit.json'), 'utf8')),
      );
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  async stats(handle: RuntimeHandle): Promise<WorkloadStats | null> {
    const workload = await this.readWorkload(handle.id);
    if (!workload || !isSameProcessAlive(workload.pid, workload.startTime)) return null;
    const proc = readProcStat(workload.pid);
    if (!proc) return null;
    const sample = { seconds: cpuSeconds(proc.cpuTicks), at: monotonicMs() };
    const previous = this.cpuSamples.get(handle.id);
    this.cpuSamples.set(handle.id, sample);
    const elapsed = previous ? (sample.at - previous.at) / 1000 : 0;
    const cpuPercent =
      previous && elapsed > 0 ? Math.max(0, ((sample.seconds - previous.seconds) / elapsed) * 100) : 0;
    return { cpuPercent, memoryBytes: residentBytes(workload.pid) };
  }

  async checkHealth(handle: RuntimeHandle, spec: InstanceSpec, check: HealthCheck): Promise<string | null> {
    if (check.http) return probeHttp('127.0.0.1', check.http.port, check.http.path, check.timeoutMs);
    // As the workload runs: its user, its env, its folder.
    return probeCommand(asUser(this.runAs, check.command!), {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...spec.job.env },
      cwd: join(this.root, handle.id),
      timeoutMs: check.timeoutMs,
    });
  }

  async logs(handle: RuntimeHandle, tailLines = 200): Promise<string> {
    const parts = await Promise.all(
      ['stdout.log', 'stderr.log'].map((file) =>
        readFile(join(this.root, handle.id, file), 'utf8').catch(() => ''),
      ),
    );
    return parts
      .map((text) =>
        text
          .split('\n')
          .slice(-tailLines - 1)
          .join('\n'),
      )
      .filter(Boolean)
      .join('\n');
  }

  /** Its output files (see FollowedOutput), stdout and stderr as asked; `tail` counts in each file. */
  async openLogs(handle: RuntimeHandle, options: LogReadOptions): Promise<LogSource> {
    if (!(await this.readWorkload(handle.id)))
      throw new RuntimeError('not_found', `native workload ${handle.id} is gone`);
    const streams = options.streams === 'all' ? (['stdout', 'stderr'] as const) : [options.streams];
    const outputs: ConstructorParameters<typeof NativeLogSource>[0] = [];
    try {
      for (const stream of streams) {
        const output = await FollowedOutput.open(join(this.root, handle.id, `${stream}.log`), {
          follow: options.follow,
          ...(options.tail !== undefined ? { tail: options.tail } : {}),
          ...(options.since !== undefined ? { since: options.since } : {}),
        });
        outputs.push({ stream, output });
      }
    } catch (error) {
      await Promise.all(outputs.map(({ output }) => output.close()));
      throw error;
    }
    return new NativeLogSource(outputs, options.follow, async () => {
      const workload = await this.readWorkload(handle.id);
      return workload !== undefined && isSameProcessAlive(workload.pid, workload.startTime);
    });
  }

  watch(onChange: () => void): () => void {
    this.listeners.add(onChange);
    return () => this.listeners.delete(onChange);
  }
}
