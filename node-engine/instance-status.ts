import type { HealthState, InstanceStatus, InstanceStatusReport, Technology } from '../shared/index.js';
import { instanceKey } from './state/desired-state.js';

/** What the node engine last said about one instance. */
export interface InstanceState {
  job: string;
  jobName: string;
  instance: number;
  generation: number;
  technology: Technology;
  status: InstanceStatus;
  detail: string;
  containerId: string | null;
  restarts: number;
  exitCode?: number;
  startedAt?: number;
  /** The container's address on this worker's overlay subnet, once attached. */
  namespaceIp?: string;
  /** Its deploy or start is being retried after failures (see InstanceStatusReport.backOff). */
  backOff?: { failures: number; retryInMs: number };
  /** Its image pull, while it is `pulling` (see InstanceStatusReport.pull). */
  pull?: { percent: number; totalBytes: number };
  /** Its health check's verdict while it runs, for a job with one. */
  health?: HealthState;
}

export type StatusPublisher = (report: InstanceStatusReport) => void;

function sameReport(a: InstanceState, b: InstanceState): boolean {
  return (
    a.generation === b.generation &&
    a.status === b.status &&
    a.detail === b.detail &&
    a.containerId === b.containerId &&
    a.restarts === b.restarts &&
    a.exitCode === b.exitCode &&
    a.startedAt === b.startedAt &&
    a.namespaceIp === b.namespaceIp &&
    a.backOff?.failures === b.backOff?.failures &&
    a.pull?.percent === b.pull?.percent &&
    a.health === b.health
  );
}

export function toReport(state: InstanceState, ts = Date.now()): InstanceStatusReport {
  return {
    job: state.job,
    instance: state.instance,
    generation: state.generation,
    status: state.status,
    detail: state.detail.slice(0, 4096),
    containerId: state.containerId,
    restarts: state.restarts,
    ...(state.exitCode !== undefined ? { exitCode: state.exitCode } : {}),
    ...(state.startedAt !== undefined ? { startedAt: state.startedAt } : {}),
    ...(state.namespaceIp !== undefined ? { namespaceIp: state.namespaceIp } : {}),
    ...(state.backOff !== undefined ? { backOff: state.backOff } : {}),
    ...(state.pull !== undefined ? { pull: state.pull } : {}),
    ...(state.health !== undefined ? { health: state.health } : {}),
    ts,
  };
}

/**
 * The latest status of every instance on this node. A change is published as a status report; setting the
 * same status again publishes nothing, so the reconciler can say what it sees on every pass.
 */
export class InstanceStatusBook {
  private readonly states = new Map<string, InstanceState>();
  private readonly publishers = new Set<StatusPublisher>();

  onChange(publisher: StatusPublisher): () => void {
    this.publishers.add(publisher);
    return () => this.publishers.delete(publisher);
  }

  set(state: InstanceState): void {
    const key = instanceKey(state.job, state.instance);
    const previous = this.states.get(key);
    if (previous && sameReport(previous, state)) return;
    this.states.set(key, state);
    const report = toReport(state);
    for (const publish of this.publishers) publish(report);
  }

  get(jobId: string, instance: number): InstanceState | undefined {
    return this.states.get(instanceKey(jobId, instance));
  }

  forget(jobId: string, instance: number): void {
    this.states.delete(instanceKey(jobId, instance));
  }

  all(): InstanceState[] {
    return [...this.states.values()];
  }
}
