import { z } from 'zod';
import {
  type HealthCheck,
  type InstanceNetwork,
  InstanceNetworkSchema,
  type JobDefinition,
  JobDefinitionSchema,
  type Technology,
} from '../../shared/index.js';
import type { LogReadOptions, LogSource } from './log-source.js';

/** What a runtime is asked to run: one instance of a job at one generation, for one node. */
export interface InstanceSpec {
  nodeId: string;
  job: JobDefinition;
  instance: number;
  generation: number;
  /** Its overlay addresses, when the cluster has an overlay. */
  network?: InstanceNetwork;
}

/**
 * What a workload carries about its instance (a container label, a native pid file): enough to take it back
 * into the desired state when the state file was lost or corrupt.
 */
export const WorkloadDescriptionSchema = z.object({
  job: JobDefinitionSchema,
  network: InstanceNetworkSchema.optional(),
});
export type WorkloadDescription = z.infer<typeof WorkloadDescriptionSchema>;

export function describeWorkload(spec: InstanceSpec): WorkloadDescription {
  return { job: spec.job, ...(spec.network ? { network: spec.network } : {}) };
}

/** A description read back, or undefined when there is none or it does not parse (an older version made it). */
export function readWorkloadDescription(text: string | undefined): WorkloadDescription | undefined {
  if (!text) return undefined;
  try {
    const parsed = WorkloadDescriptionSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Identifies a workload inside its runtime (a container id, a native instance's name). */
export interface RuntimeHandle {
  technology: Technology;
  id: string;
}

export type WorkloadState = 'running' | 'exited' | 'created' | 'other';

/** A workload a runtime found running (or stopped) for this node, read back from its labels or pid file. */
export interface RuntimeWorkload {
  handle: RuntimeHandle;
  jobId: string;
  jobName: string;
  instance: number;
  generation: number;
  state: WorkloadState;
  exitCode?: number;
  startedAt?: number;
  finishedAt?: number;
  /** The main process (the container's init), while it runs: the overlay finds its network namespace by it. */
  pid?: number;
  /** The job and addresses it was made for, where it says (see WorkloadDescription). */
  description?: WorkloadDescription;
}

/** A workload just started, with the time its runtime says it started. */
export interface DeployedWorkload {
  handle: RuntimeHandle;
  startedAt?: number;
}

export interface WorkloadStats {
  cpuPercent: number;
  memoryBytes: number;
}

/** Phases a deploy goes through before the workload runs; the reconciler reports each one. */
export type DeployPhase = 'pulling' | 'creating';
/** How far an image pull is (InstanceStatusReport.pull). */
export interface PullMeasure {
  percent: number;
  totalBytes: number;
}
export type DeployProgress = (phase: DeployPhase, detail: string, pull?: PullMeasure) => void;

export type RuntimeErrorCode = 'image_pull_failed' | 'create_failed' | 'start_failed' | 'not_found';

/** A deploy or start the runtime refused, with a reason a user can act on. */
export class RuntimeError extends Error {
  override name = 'RuntimeError';
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * What a probe of a runtime found: `up` (it answers), `down` (nothing listens: its daemon is not running), or
 * `unresponsive` (it did not answer in time, or answered with an error: busy or hung). Only `down` says that the
 * daemon went away and may have stopped its workloads.
 */
export type RuntimeProbe = 'up' | 'down' | 'unresponsive';

/** One interface for Docker and native processes, so the reconciler does not care which runs a job. */
export interface Runtime {
  readonly technology: Technology;
  /** Whether this runtime works on this machine now: see RuntimeProbe. */
  probe(): Promise<RuntimeProbe>;
  /** Prepares (pulls), creates and starts the workload. Throws RuntimeError with a clear message. */
  deploy(spec: InstanceSpec, progress: DeployProgress): Promise<DeployedWorkload>;
  /** Starts an exited workload again (a restart by the node engine's own policy); resolves to its start time. */
  start(handle: RuntimeHandle, spec: InstanceSpec): Promise<number | undefined>;
  /** Stops (with a grace period) and removes the workload; removing one already gone is not an error. */
  remove(handle: RuntimeHandle): Promise<void>;
  /** Every workload of this node, found by labels or pid files. */
  list(): Promise<RuntimeWorkload[]>;
  stats(handle: RuntimeHandle): Promise<WorkloadStats | null>;
  logs(handle: RuntimeHandle, tailLines?: number): Promise<string>;
  /**
   * Runs the job's health check once on a running workload: null when it passes, else why not. A command runs
   * inside the container (Docker) or on the host as the workload's user with its env (native); an HTTP GET goes
   * to the container's address (Docker) or to 127.0.0.1 (native). Never throws.
   */
  checkHealth(handle: RuntimeHandle, spec: InstanceSpec, check: HealthCheck): Promise<string | null>;
  /**
   * The workload's output as a source read at the reader's pace (see LogSource); throws RuntimeError `not_found`
   * when the workload is gone.
   */
  openLogs(handle: RuntimeHandle, options: LogReadOptions): Promise<LogSource>;
  /** Calls `onChange` when a workload of this node changes behind the node engine's back; returns an unsubscribe. */
  watch(onChange: () => void): () => void;
}

/** The container (or native instance) name: node id and generation in it, as node engines may share a Docker engine. */
export function workloadName(spec: InstanceSpec): string {
  const nodeId = spec.nodeId.replace(/[^a-zA-Z0-9_.-]/g, '-');
  return `edge-${spec.job.name}-${spec.instance}-${nodeId}-g${spec.generation}`;
}

/** Labels that tie a workload to its node, job, instance and generation. */
export function workloadLabels(spec: InstanceSpec): Record<string, string> {
  return {
    'edge.node': spec.nodeId,
    'edge.job': spec.job.id,
    'edge.job.name': spec.job.name,
    'edge.instance': String(spec.instance),
    'edge.generation': String(spec.generation),
    'edge.spec': JSON.stringify(describeWorkload(spec)),
  };
}
