import type { CommandAck, InstanceStatusReport, InstanceSummary, Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import { definitionAt, type InstanceRecord, type MoveRecord, type Store } from '../store/index.js';
import type { Evaluations } from './evaluations.js';
import { healthAfter } from './instance-lifecycle.js';
import { expectedOnNode, type InstanceMessage, transition } from './instance-states.js';
import { abandonMove, completeMove } from './moves.js';

/**
 * How long a node's telemetry may go on without an instance the cluster manager placed there before it is
 * sent again: the node lost it (its data dir wiped, its state file gone). Long enough for a restarted node
 * engine to have reconciled and listed what it runs.
 */
export const MISSING_GRACE_MS = 10_000;

/** A pull is told in events at each quarter (25, 50, 75%): a few events per pull, whatever the node reports. */
const PULL_EVENT_STEP = 25;
/** Pulls followed at once at most; beyond, the oldest are forgotten (an instance deleted mid-pull never ends). */
const PULLS_FOLLOWED = 10_000;

/** What nodes tell the cluster manager about instances: status reports, command acks, telemetry summaries. */
export class NodeReports {
  /** Instances a node did not list, by `jobId/number`, since when. */
  private readonly missingSince = new Map<string, number>();
  /** Instances pulling their image, by `jobId/number/generation`: the last quarter told in an event. */
  private readonly pullsTold = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    private readonly evaluations: Evaluations,
    private readonly logger: Logger,
    /** A command was acked, this long (seconds) after it was made (`edge_cm_command_round_trip_seconds`). */
    private readonly acked: (kind: string, seconds: number) => void = () => {},
  ) {}

  /** A status report counts only from the node that holds the instance at that generation (or a move target). */
  onStatus(nodeId: string, report: InstanceStatusReport, now = Date.now()): void {
    const move = this.store.moves.get(report.job, report.instance);
    if (move && move.toNode === nodeId && move.generation === report.generation) {
      this.onMoveProgress(move, report, now);
      return;
    }
    const instance = this.store.jobs.getInstance(report.job, report.instance);
    if (!instance || instance.nodeId !== nodeId || instance.generation !== report.generation) {
      this.logger.debug({ nodeId, report }, 'stale status report ignored');
      return;
    }
    this.applyReport(instance, report, now);
  }

  onAck(nodeId: string, ack: CommandAck, now = Date.now()): void {
    const command = this.store.commands.get(ack.id);
    if (!command || command.nodeId !== nodeId) {
      this.logger.debug({ nodeId, ack }, 'ack for an unknown command ignored');
      return;
    }
    let freed = false;
    this.store.transaction(() => {
      const error = ack.error ? `${ack.error.code}: ${ack.error.message}` : null;
      if (!this.store.commands.markAcked(ack.id, ack.ok, error, now)) return;
      this.acked(command.kind, Math.max(0, now - command.createdAt) / 1000);
      const job = this.store.jobs.getJob(command.jobId);
      if (!job) return;
      if (!ack.ok && command.kind === 'move') {
        const move = this.store.moves.get(job.id, command.instance);
        if (move?.generation === command.generation)
          abandonMove(this.store, this.outbox, job, move, error ?? 'refused');
      } else if (!ack.ok) {
        this.store.events.record(
          'command.refused',
          `${command.kind} ${job.name}#${command.instance}: ${error}`,
          {
            nodeId,
            jobId: job.id,
          },
        );
        const instance = this.store.jobs.getInstance(job.id, command.instance);
        const next = instance && transition(instance.status, { kind: 'refused' });
        if (
          next &&
          'status' in next &&
          instance.nodeId === nodeId &&
          instance.generation === command.generation
        ) {
          this.store.jobs.updateInstance({
            ...instance,
            status: next.status,
            detail: error ?? 'refused',
            updatedAt: now,
          });
          freed = true;
        }
      }
      if (command.kind !== 'delete') return;
      if (job.state === 'deleting') {
        if (this.store.commands.unackedForJob(job.id, 'delete').length === 0) {
          this.store.jobs.removeJob(job.id);
          this.store.events.record('job.deleted', `job ${job.name} deleted`, { jobId: job.id });
          freed = true;
        }
        return;
      }
      const instance = this.store.jobs.getInstance(job.id, command.instance);
      if (
        instance &&
        'remove' in transition(instance.status, { kind: 'deleteAcked' }) &&
        instance.nodeId === nodeId &&
        instance.generation <= command.generation
      ) {
        this.store.jobs.removeInstance(job.id, instance.number);
        freed = true;
      }
    });
    if (freed) this.evaluations.unblock('capacity-freed');
  }

  /**
   * Telemetry lists what the node runs: statuses heal from it when a report was lost, and what the node does
   * not have (any more) is sent to it again.
   */
  onInstanceSummaries(nodeId: string, summaries: InstanceSummary[], now = Date.now()): void {
    this.redeployMissing(nodeId, summaries, now);
    for (const summary of summaries) {
      const instance = this.store.jobs.getInstance(summary.job, summary.instance);
      if (!instance || instance.nodeId !== nodeId || instance.generation !== summary.generation) continue;
      const next = transition(instance.status, { kind: 'listed', status: summary.status });
      const status = 'status' in next ? next.status : instance.status;
      const health = healthAfter(instance, status, summary.health, now);
      if (status !== instance.status || health.health !== instance.health)
        this.store.jobs.updateInstance({ ...instance, status, ...health, updatedAt: now });
    }
  }

  private redeployMissing(nodeId: string, summaries: InstanceSummary[], now: number): void {
    const listed = new Set(
      summaries.map((summary) => `${summary.job}/${summary.instance}/${summary.generation}`),
    );
    const missing = this.store.jobs.instancesOnNode(nodeId).filter((instance) => {
      const key = `${instance.jobId}/${instance.number}`;
      const absent =
        expectedOnNode(instance.status) &&
        !listed.has(`${key}/${instance.generation}`) &&
        !this.outbox.hasPendingFor(nodeId, instance.jobId, instance.number) &&
        !this.store.moves.get(instance.jobId, instance.number);
      if (!absent) this.missingSince.delete(key);
      else if (!this.missingSince.has(key)) this.missingSince.set(key, now);
      return absent && now - this.missingSince.get(key)! >= MISSING_GRACE_MS;
    });
    if (missing.length === 0) return;
    this.store.transaction(() => {
      for (const instance of missing) {
        const job = this.store.jobs.getJob(instance.jobId);
        this.missingSince.delete(`${instance.jobId}/${instance.number}`);
        if (job?.state !== 'active') continue;
        this.outbox.enqueue(nodeId, {
          kind: 'deploy',
          job: definitionAt(this.store, job, instance.version),
          instance: instance.number,
          generation: instance.generation,
          worker: [nodeId],
        });
        this.store.events.record(
          'instance.redeployed',
          `${job.name}#${instance.number} missing on ${this.store.nodes.nameOf(nodeId)}: sent again`,
          { jobId: job.id, nodeId },
        );
      }
    });
    this.outbox.flush();
  }

  /** The node went offline: what it ran is `lost` until it reports again. */
  onNodeOffline(nodeId: string, now = Date.now()): void {
    this.store.transaction(() => {
      for (const instance of this.store.jobs.instancesOnNode(nodeId)) {
        const next = transition(instance.status, { kind: 'nodeOffline' });
        if ('status' in next)
          this.store.jobs.updateInstance({
            ...instance,
            status: next.status,
            detail: 'node offline',
            updatedAt: now,
          });
      }
    });
  }

  private applyReport(instance: InstanceRecord, report: InstanceStatusReport, now: number): void {
    const message: InstanceMessage = { kind: 'report', status: report.status };
    const next = transition(instance.status, message);
    // A report of the status it has already still carries news (restarts, container id, namespace IP).
    if ('ignore' in next && instance.status !== report.status) return;
    const status = 'status' in next ? next.status : instance.status;
    const changed = instance.status !== status;
    const health = healthAfter(instance, status, report.health, now);
    const healthChanged = health.health !== instance.health && status === 'running' && !changed;
    this.store.transaction(() => {
      this.store.jobs.updateInstance({
        ...instance,
        status,
        detail: report.detail,
        containerId: report.containerId,
        restarts: report.restarts,
        startedAt: report.startedAt ?? instance.startedAt,
        exitCode: report.exitCode ?? null,
        namespaceIp: report.namespaceIp ?? instance.namespaceIp,
        ...health,
        updatedAt: now,
      });
      if (healthChanged && health.health !== null) {
        const job = this.store.jobs.getJob(instance.jobId);
        this.store.events.record(
          'instance.health',
          `${job?.name ?? instance.jobId}#${instance.number} ${health.health}${report.detail ? `: ${report.detail}` : ''}`,
          { nodeId: instance.nodeId ?? undefined, jobId: instance.jobId },
        );
      }
      const pullNews = this.pullProgressed(instance, status, report);
      if (changed || pullNews) {
        const job = this.store.jobs.getJob(instance.jobId);
        const name = `${job?.name ?? instance.jobId}#${instance.number}`;
        this.store.events.record(
          changed ? 'instance.status' : 'instance.pulling',
          changed
            ? `${name} ${status}${report.detail ? `: ${report.detail}` : ''}`
            : `${name} ${report.detail}`,
          { nodeId: instance.nodeId ?? undefined, jobId: instance.jobId },
        );
      }
    });
    if (changed && (status === 'failed' || status === 'stopped'))
      this.evaluations.unblock('instance-stopped');
  }

  /** Whether a pulling instance's pull passed another quarter since the last event about it. */
  private pullProgressed(instance: InstanceRecord, status: string, report: InstanceStatusReport): boolean {
    const key = `${instance.jobId}/${instance.number}/${instance.generation}`;
    if (status !== 'pulling' || report.pull === undefined) {
      this.pullsTold.delete(key);
      return false;
    }
    const step = Math.floor(report.pull.percent / PULL_EVENT_STEP) * PULL_EVENT_STEP;
    if (step <= (this.pullsTold.get(key) ?? 0) || step >= 100) return false;
    if (this.pullsTold.size >= PULLS_FOLLOWED) this.pullsTold.delete(this.pullsTold.keys().next().value!);
    this.pullsTold.set(key, step);
    return true;
  }

  /**
   * The move target reports: `running` completes the move; `failed`, or a deploy it retries after a back-off,
   * abandons it (the source keeps it: make-before-break never waits on a target that cannot start it).
   */
  private onMoveProgress(move: MoveRecord, report: InstanceStatusReport, now: number): void {
    const cannot = report.status === 'failed' || report.backOff !== undefined;
    if (report.status !== 'running' && !cannot) return;
    const job = this.store.jobs.getJob(move.jobId);
    const instance = this.store.jobs.getInstance(move.jobId, move.number);
    if (!job || !instance) return;
    this.store.transaction(() => {
      if (report.status === 'running' && !cannot)
        completeMove(this.store, this.outbox, job, instance, move, report, now);
      else abandonMove(this.store, this.outbox, job, move, report.detail || 'the target could not start it');
    });
    this.outbox.flush();
  }
}
