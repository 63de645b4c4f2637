import type { Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { JobRecord, Store } from '../store/index.js';
import type { Placement } from './placement.js';

/** What made the scheduler look at a job again (a label of `edge_cm_evaluations_total`). */
export type EvaluationTrigger =
  | 'job-registered'
  | 'job-scaled'
  | 'job-updated'
  | 'node-registered'
  | 'node-online'
  | 'capacity-freed'
  | 'instance-stopped'
  | 'node-removed'
  | 'node-updated';

/** How long triggers are gathered before the queued jobs are evaluated in one pass. */
const GATHER_MS = 50;

/**
 * The scheduler's work queue, in memory (Nomad's evaluation broker is the model). Triggers that add or free
 * capacity (a node joins or comes back, an instance stops, its delete is acked) are gathered for GATHER_MS; then
 * one pass evaluates each blocked job (one with instances waiting for a node, read from the store's status index)
 * once, however many triggers named it, against the in-memory state in one transaction: its pending instances
 * are placed, then the commands go out. A thousand nodes joining in a second cost one pass, not a thousand.
 *
 * The API's own triggers (a job posted or scaled) are evaluated at once, inside the request's transaction, so
 * that its answer already says where each instance goes. Lost and failed instances are Failover's: it knows
 * the grace, the rate limit and the reschedule policy that decide when they are due.
 */
export class Evaluations {
  /** The triggers gathered for the next pass. */
  private readonly triggers = new Set<EvaluationTrigger>();
  private soon: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly placement: Placement,
    private readonly outbox: CommandOutbox,
    private readonly counted: (trigger: EvaluationTrigger) => void,
    private readonly logger: Logger,
    /** How long placing one job's waiting instances took, in seconds (`edge_cm_placement_seconds`). */
    private readonly timed: (seconds: number) => void = () => {},
  ) {}

  /** Call inside the transaction that made the instances: places them now (the API's triggers). */
  evaluate(job: JobRecord, numbers: number[], trigger: EvaluationTrigger, now = Date.now()): void {
    this.counted(trigger);
    this.place(job, numbers, now);
  }

  private place(job: JobRecord, numbers: number[], now: number): void {
    const started = performance.now();
    this.placement.place(job, numbers, now);
    this.timed((performance.now() - started) / 1000);
  }

  /** Capacity came or went free: the blocked jobs are evaluated in the next pass. O(1) per trigger. */
  unblock(trigger: EvaluationTrigger): void {
    this.triggers.add(trigger);
    this.soon ??= setTimeout(() => this.process(), GATHER_MS);
  }

  /** Evaluates every blocked job now (the timer's work; public for tests). */
  process(now = Date.now()): void {
    clearTimeout(this.soon);
    this.soon = undefined;
    if (this.triggers.size === 0) return;
    const triggers = [...this.triggers];
    this.triggers.clear();
    const blocked = new Set(this.store.jobs.instancesWithStatus('pending').map((instance) => instance.jobId));
    if (blocked.size === 0) return;
    // The oldest job first: capacity that frees up goes to who waited longest.
    const createdAt = (jobId: string) => this.store.jobs.getJob(jobId)?.createdAt ?? 0;
    const batch = [...blocked].sort((a, b) => createdAt(a) - createdAt(b));
    let placed = 0;
    this.store.transaction(() => {
      for (const jobId of batch) {
        for (const trigger of triggers) this.counted(trigger);
        const job = this.store.jobs.getJob(jobId);
        if (job?.state !== 'active') continue;
        const pending = this.store.jobs
          .instancesOf(jobId)
          .filter((instance) => instance.status === 'pending')
          .map((instance) => instance.number);
        this.place(job, pending, now);
        placed += pending.length;
      }
    });
    this.logger.debug({ jobs: batch.length, pending: placed }, 'evaluated blocked jobs');
    this.outbox.flush();
  }

  stop(): void {
    clearTimeout(this.soon);
    this.soon = undefined;
  }
}
