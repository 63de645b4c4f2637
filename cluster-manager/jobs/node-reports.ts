import type { CommandAck, InstanceStatusReport, InstanceSummary, Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { InstanceRecord, MoveRecord, Store } from '../store/index.js';
import { abandonMove, completeMove } from './moves.js';
import type { Placement } from './placement.js';

/** What nodes tell the cluster manager about instances: status reports, command acks, telemetry summaries. */
export class NodeReports {
  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    private readonly placement: Placement,
    private readonly logger: Logger,
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
    if (instance.status === 'stopping' && report.status !== 'stopped') return;
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
        if (instance && instance.nodeId === nodeId && instance.generation === command.generation) {
          this.store.jobs.updateInstance({
            ...instance,
            status: 'failed',
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
        instance?.status === 'stopping' &&
        instance.nodeId === nodeId &&
        instance.generation <= command.generation
      ) {
        this.store.jobs.removeInstance(job.id, instance.number);
        freed = true;
      }
    });
    if (freed) this.placement.placePending();
  }

  /** Telemetry lists what the node runs: statuses heal from it when a report was lost. */
  onInstanceSummaries(nodeId: string, summaries: InstanceSummary[], now = Date.now()): void {
    for (const summary of summaries) {
      const instance = this.store.jobs.getInstance(summary.job, summary.instance);
      if (!instance || instance.nodeId !== nodeId || instance.generation !== summary.generation) continue;
      if (instance.status === summary.status || instance.status === 'stopping') continue;
      this.store.jobs.updateInstance({ ...instance, status: summary.status, updatedAt: now });
    }
  }

  /** The node went offline: what it ran is `lost` until it reports again. */
  onNodeOffline(nodeId: string, now = Date.now()): void {
    this.store.transaction(() => {
      for (const instance of this.store.jobs.instancesOnNode(nodeId)) {
        if (['stopping', 'stopped', 'failed', 'lost'].includes(instance.status)) continue;
        this.store.jobs.updateInstance({
          ...instance,
          status: 'lost',
          detail: 'node offline',
          updatedAt: now,
        });
      }
    });
  }

  private applyReport(instance: InstanceRecord, report: InstanceStatusReport, now: number): void {
    const changed = instance.status !== report.status;
    this.store.transaction(() => {
      this.store.jobs.updateInstance({
        ...instance,
        status: report.status,
        detail: report.detail,
        containerId: report.containerId,
        restarts: report.restarts,
        startedAt: report.startedAt ?? instance.startedAt,
        exitCode: report.exitCode ?? null,
        namespaceIp: report.namespaceIp ?? instance.namespaceIp,
        updatedAt: now,
      });
      if (changed) {
        const job = this.store.jobs.getJob(instance.jobId);
        this.store.events.record(
          'instance.status',
          `${job?.name ?? instance.jobId}#${instance.number} ${report.status}${report.detail ? `: ${report.detail}` : ''}`,
          { nodeId: instance.nodeId ?? undefined, jobId: instance.jobId },
        );
      }
    });
    if (changed && (report.status === 'failed' || report.status === 'stopped')) this.placement.placePending();
  }

  /** The move target reports: `running` completes the move, `failed` abandons it (the source keeps it). */
  private onMoveProgress(move: MoveRecord, report: InstanceStatusReport, now: number): void {
    if (report.status !== 'running' && report.status !== 'failed') return;
    const job = this.store.jobs.getJob(move.jobId);
    const instance = this.store.jobs.getInstance(move.jobId, move.number);
    if (!job || !instance) return;
    this.store.transaction(() => {
      if (report.status === 'running')
        completeMove(this.store, this.outbox, job, instance, move, report, now);
      else abandonMove(this.store, this.outbox, job, move, report.detail || 'the target could not start it');
    });
    this.outbox.flush();
  }
}
