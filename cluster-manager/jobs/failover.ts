import type { Logger } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { InstanceRecord, JobRecord, Store } from '../store/index.js';
import { abandonMove } from './moves.js';
import type { Placement } from './placement.js';
import { nextRescheduleAt, reschedulePolicy } from './reschedule.js';

/** A move whose target has not run the instance by then is given up (slow pulls on thin links included). */
export const MOVE_TIMEOUT_MS = 10 * 60_000;
/** A job replaces at most this many instances (or its replica count, if larger) per window. */
const MIN_REPLACEMENTS_PER_WINDOW = 2;
const RATE_WINDOW_MS = 60_000;

export interface FailoverOptions {
  store: Store;
  placement: Placement;
  outbox: CommandOutbox;
  /** When the node went offline, or undefined while it is online. */
  offlineSince(nodeId: string): number | undefined;
  /** True while a mass silence is under way (NodeLiveness): nothing is replaced or given up meanwhile. */
  paused?(): boolean;
  logger: Logger;
}

/**
 * Replaces `lost` instances on nodes that fit, once their node has been offline for the job's
 * `disconnect.replaceAfterMs`. The number and instance IP stay; the generation rises, so the old node is told
 * to stop the old copy when it comes back. A per-job rate limit keeps a flapping fleet from a storm of moves.
 */
export class Failover {
  private readonly recentReplacements = new Map<string, number[]>();
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Immediate | undefined;

  constructor(private readonly options: FailoverOptions) {}

  start(): void {
    this.timer ??= setInterval(() => this.run(), 1000);
  }

  stop(): void {
    clearInterval(this.timer);
    clearImmediate(this.soon);
    this.timer = undefined;
    this.soon = undefined;
  }

  /** A pass as soon as the current work is done: nodes taken offline together are all offline by then. */
  runSoon(): void {
    this.soon ??= setImmediate(() => {
      this.soon = undefined;
      this.run();
    });
  }

  /** One pass over moves, lost and failed instances; also called at once when a node goes offline. */
  run(now = Date.now()): void {
    if (this.options.paused?.()) return;
    this.abandonStuckMoves(now);
    this.replaceLost(now);
    this.rescheduleFailed(now);
  }

  /**
   * Places failed instances again per their job's reschedule policy, on another node where one fits (else on
   * the same one), under a new generation; the old node is told to remove the failed copy.
   */
  private rescheduleFailed(now: number): void {
    const { store, placement, outbox, logger } = this.options;
    const failed = this.placedWithoutMove('failed');
    if (failed.length === 0) return;
    let placed = 0;
    store.transaction(() => {
      for (const instance of failed) {
        const job = store.jobs.getJob(instance.jobId);
        // `restart: never` says the workload must not run again, here or elsewhere.
        if (job?.state !== 'active' || job.spec.restart.policy === 'never') continue;
        const policy = reschedulePolicy(job.spec);
        const history = instance.reschedules;
        const due = nextRescheduleAt(policy, instance.updatedAt, history, now);
        if (due === undefined || now < due) continue;
        const from = instance.nodeId!;
        const detail = `rescheduled after failing on ${store.nodes.nameOf(from)}: ${instance.detail}`;
        // The attempt is kept with the instance (in the same write as its new placement): it counts after a
        // restart of the cluster manager too.
        const reschedules = [...history.filter((at) => now - at < policy.intervalMs), now];
        if (!placement.replace(job, { ...instance, reschedules }, now, { avoid: from, detail })) continue;
        placed++;
        store.events.record(
          'instance.rescheduled',
          `${job.name}#${instance.number} failed on ${store.nodes.nameOf(from)}: placed again (attempt ${reschedules.length} of ${policy.attempts} in the interval)`,
          { jobId: job.id, nodeId: from },
        );
      }
    });
    if (placed > 0) {
      logger.info({ placed }, 'rescheduled failed instances');
      outbox.flush();
    }
  }

  /** A move whose target went offline or never got there would otherwise stay in flight forever. */
  private abandonStuckMoves(now: number): void {
    const { store, outbox, offlineSince } = this.options;
    const stuck = store.moves.all().flatMap((move) => {
      if (offlineSince(move.toNode) !== undefined) return [{ move, reason: 'the target went offline' }];
      if (now - move.startedAt > MOVE_TIMEOUT_MS)
        return [{ move, reason: 'the target did not run it in time' }];
      return [];
    });
    if (stuck.length === 0) return;
    store.transaction(() => {
      for (const { move, reason } of stuck) {
        const job = store.jobs.getJob(move.jobId);
        if (job) abandonMove(store, outbox, job, move, reason);
      }
    });
    outbox.flush();
  }

  private replaceLost(now: number): void {
    const { store, placement, outbox, offlineSince, logger } = this.options;
    const lost = this.placedWithoutMove('lost');
    if (lost.length === 0) return;
    let replaced = 0;
    store.transaction(() => {
      for (const instance of lost) {
        const job = store.jobs.getJob(instance.jobId);
        const since = offlineSince(instance.nodeId!);
        if (job?.state !== 'active' || since === undefined) continue;
        if (now - since < job.spec.disconnect.replaceAfterMs || !this.allowed(job, now)) continue;
        if (placement.replace(job, instance, now)) {
          this.recentReplacements.get(job.id)!.push(now);
          replaced++;
          store.events.record('instance.replaced', describe(store, job, instance), {
            jobId: job.id,
            nodeId: instance.nodeId!,
          });
        }
      }
    });
    if (replaced > 0) {
      logger.info({ replaced }, 'replaced instances lost with offline nodes');
      outbox.flush();
    }
  }

  /**
   * Instances in `status` that are bound to a node and have no move under way: an instance being moved is the
   * move's (its target may still take it over), not failover's.
   */
  private placedWithoutMove(status: 'lost' | 'failed'): InstanceRecord[] {
    const { store } = this.options;
    return store.jobs
      .instancesWithStatus(status)
      .filter((instance) => instance.nodeId && !store.moves.get(instance.jobId, instance.number));
  }

  private allowed(job: JobRecord, now: number): boolean {
    const recent = (this.recentReplacements.get(job.id) ?? []).filter((at) => now - at < RATE_WINDOW_MS);
    this.recentReplacements.set(job.id, recent);
    return recent.length < Math.max(MIN_REPLACEMENTS_PER_WINDOW, job.spec.replicas);
  }
}

function describe(store: Store, job: JobRecord, instance: InstanceRecord): string {
  const node = store.nodes.nameOf(instance.nodeId!);
  return `${job.name}#${instance.number} lost with node ${node} (generation ${instance.generation}): placed again`;
}
