import { type Logger, updatePolicyOf } from '../../shared/index.js';
import type { Store } from '../store/index.js';
import { countsTowardsReplicas } from './instance-states.js';
import type { JobService } from './job-service.js';

/** How often draining nodes are looked at: moves that ended make room for the next ones. */
const TICK_MS = 1000;

/**
 * Moves every instance off draining nodes, make-before-break (each a `move`: the target starts it, the source
 * stops it once it runs there), at most the job's `update.maxParallel` moves of one job at a time. An instance
 * no other node can take stays, said once in a `drain.blocked` event, and is tried again at every tick (a node
 * may join, or capacity free up). The drain ends, with a `node.drained` event, once nothing runs there; the
 * node stays cordoned. Everything it needs is in the store (the `draining` flag and the moves), so a drain goes
 * on after a restart of the cluster manager.
 */
export class Drains {
  private timer: NodeJS.Timeout | undefined;
  /** Instances a blocked move was already told of, by `jobId/number`: one event each, not one a second. */
  private readonly told = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly jobs: JobService,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.process(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look at every draining node (the timer's work; public for tests and for a drain just started). */
  process(now = Date.now()): void {
    // Every second: at 10,000 nodes a sorted copy of the fleet would cost more than the drains themselves.
    const draining = this.store.nodes.draining();
    if (draining.length === 0) this.told.clear();
    for (const node of draining) this.drainNode(node.id, now);
  }

  private drainNode(nodeId: string, now: number): void {
    const node = this.store.nodes.get(nodeId)!;
    const staying = this.store.jobs
      .instancesOnNode(nodeId)
      .filter((instance) => countsTowardsReplicas(instance.status));
    if (staying.length === 0) {
      this.store.transaction(() => {
        this.store.nodes.setDraining(nodeId, false);
        this.store.events.record('node.drained', `node ${node.name} drained: nothing runs there`, {
          nodeId,
        });
      });
      return;
    }
    for (const instance of staying) {
      if (this.store.moves.get(instance.jobId, instance.number)) continue;
      const job = this.store.jobs.getJob(instance.jobId);
      if (job?.state !== 'active') continue;
      if (this.store.moves.ofJob(job.id).length >= updatePolicyOf(job.spec).maxParallel) continue;
      const key = `${job.id}/${instance.number}`;
      try {
        this.jobs.move(job.id, instance.number, undefined, now);
        this.told.delete(key);
      } catch (error) {
        if (this.told.has(key)) continue;
        this.told.add(key);
        const why = (error as Error).message;
        this.store.events.record(
          'drain.blocked',
          `node ${node.name}: ${job.name}#${instance.number} stays: ${why}`,
          {
            nodeId,
            jobId: job.id,
          },
        );
        this.logger.warn({ node: node.name, job: job.name, instance: instance.number, why }, 'drain blocked');
      }
    }
  }
}
