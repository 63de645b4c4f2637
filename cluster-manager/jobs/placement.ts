import type { Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import { placeInstances } from '../scheduler/index.js';
import { type JobRecord, jobDefinition, type Store } from '../store/index.js';
import { schedulableNodes } from './cluster-snapshot.js';

/** Places instances with the scheduler and turns each placement into a deploy command in the outbox. */
export class Placement {
  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    private readonly isOnline: (nodeId: string) => boolean,
    private readonly logger: Logger,
  ) {}

  /** Call inside a transaction. Instances that fit nowhere stay `pending` with the reasons in `detail`. */
  place(job: JobRecord, numbers: number[], now = Date.now()): void {
    if (numbers.length === 0) return;
    const definition = jobDefinition(job);
    const result = placeInstances(definition, numbers, schedulableNodes(this.store, this.isOnline));
    for (const placement of result.placements) {
      const instance = this.store.jobs.getInstance(job.id, placement.instance);
      if (!instance) continue;
      const generation = this.store.jobs.nextGeneration(job.id);
      this.store.jobs.updateInstance({
        ...instance,
        nodeId: placement.nodeId,
        status: 'scheduled',
        detail: '',
        containerId: null,
        generation,
        startedAt: null,
        exitCode: null,
        updatedAt: now,
      });
      this.outbox.enqueue(placement.nodeId, {
        kind: 'deploy',
        job: definition,
        instance: placement.instance,
        generation,
        worker: [placement.nodeId],
      });
    }
    for (const unplaced of result.unplaced) {
      const instance = this.store.jobs.getInstance(job.id, unplaced.instance);
      if (!instance || (instance.status === 'pending' && instance.detail === unplaced.summary)) continue;
      this.store.jobs.updateInstance({
        ...instance,
        nodeId: null,
        status: 'pending',
        detail: unplaced.summary,
        updatedAt: now,
      });
    }
  }

  /** Tries again every pending instance of every live job: a node joined or capacity freed up. */
  placePending(): void {
    const pending = this.store.jobs.pendingInstances();
    if (pending.length === 0) return;
    const byJob = new Map<string, number[]>();
    for (const instance of pending)
      byJob.set(instance.jobId, [...(byJob.get(instance.jobId) ?? []), instance.number]);
    this.store.transaction(() => {
      for (const [jobId, numbers] of byJob) {
        const job = this.store.jobs.getJob(jobId);
        if (job?.state === 'active') this.place(job, numbers);
      }
    });
    this.logger.debug({ pending: pending.length }, 'placed pending instances again');
    this.outbox.flush();
  }
}
