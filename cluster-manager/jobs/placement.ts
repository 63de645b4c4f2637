import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { SchedulableNode } from '../scheduler/index.js';
import { placeInstances } from '../scheduler/index.js';
import { definitionAt, type InstanceRecord, type JobRecord, type Store } from '../store/index.js';
import { AllocationLedger } from './allocation-ledger.js';

/** Places instances with the scheduler and turns each placement into a deploy command in the outbox. */
export class Placement {
  private readonly ledger: AllocationLedger;

  constructor(
    private readonly store: Store,
    private readonly outbox: CommandOutbox,
    isOnline: (nodeId: string) => boolean,
  ) {
    this.ledger = new AllocationLedger(store, isOnline);
  }

  /** The fleet as the scheduler sees it now (kept in memory; see AllocationLedger). Not to be changed. */
  schedulableNodes(): readonly SchedulableNode[] {
    return this.ledger.schedulableNodes();
  }

  /** The same, by node id: what each node has allocated, for views. Not to be changed. */
  schedulableNodesById(): ReadonlyMap<string, SchedulableNode> {
    return this.ledger.byId();
  }

  /**
   * Call inside a transaction. Instances that fit nowhere stay `pending` with the reasons in `detail`. Each is
   * placed as the version it runs asks (a roll-out may leave instances of an older one waiting).
   */
  place(job: JobRecord, numbers: number[], now = Date.now()): void {
    const byVersion = new Map<number, number[]>();
    for (const number of numbers) {
      const version = this.store.jobs.getInstance(job.id, number)?.version ?? job.version;
      const numbersOf = byVersion.get(version);
      if (numbersOf) numbersOf.push(number);
      else byVersion.set(version, [number]);
    }
    for (const [version, ofVersion] of byVersion) this.placeVersion(job, version, ofVersion, now);
  }

  private placeVersion(job: JobRecord, version: number, numbers: number[], now: number): void {
    const definition = definitionAt(this.store, job, version);
    const result = placeInstances(definition, numbers, this.ledger.schedulableNodes());
    for (const placement of result.placements) {
      const instance = this.store.jobs.getInstance(job.id, placement.instance);
      if (instance) this.assign(job, instance, placement.nodeId, '', now);
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

  /**
   * Call inside a transaction. Places a `lost` instance on another node under a new generation and queues a
   * `delete` of the old generation for its old node, delivered when that node returns. Returns false (and
   * leaves the instance where it is, with the reasons in `detail`) when no other node fits.
   */
  replace(
    job: JobRecord,
    lost: InstanceRecord,
    now = Date.now(),
    options: { avoid?: string; detail?: string } = {},
  ): boolean {
    const definition = definitionAt(this.store, job, lost.version);
    const nodes = this.ledger.schedulableNodes();
    // A node to avoid (where it failed) is taken only when no other fits.
    const elsewhere = options.avoid ? nodes.filter((node) => node.id !== options.avoid) : nodes;
    let result = placeInstances(definition, [lost.number], elsewhere);
    if (!result.placements[0] && elsewhere.length < nodes.length)
      result = placeInstances(definition, [lost.number], nodes);
    const placement = result.placements[0];
    if (!placement || !lost.nodeId) {
      if (options.avoid) return false; // a failed instance keeps its own detail; it is tried again later
      const detail = `node offline; ${result.unplaced[0]?.summary ?? 'not placed'}`;
      if (lost.detail !== detail) this.store.jobs.updateInstance({ ...lost, detail, updatedAt: now });
      return false;
    }
    this.outbox.enqueueDelete(lost.nodeId, definition, lost.number, lost.generation);
    this.assign(
      job,
      lost,
      placement.nodeId,
      options.detail ?? `replaces generation ${lost.generation} lost with node ${lost.nodeId}`,
      now,
    );
    return true;
  }

  /** Binds an instance to a node under a new generation and queues its deploy; the instance IP stays. */
  private assign(
    job: JobRecord,
    instance: InstanceRecord,
    nodeId: string,
    detail: string,
    now: number,
  ): void {
    const generation = this.store.jobs.nextGeneration(job.id);
    this.store.jobs.updateInstance({
      ...instance,
      nodeId,
      status: 'scheduled',
      detail,
      containerId: null,
      generation,
      restarts: 0,
      startedAt: null,
      exitCode: null,
      // The namespace IP is the old node's; the new one reports its own once the instance is attached there.
      namespaceIp: null,
      // A new attempt: a roll-out gives it its full deadline to become healthy.
      versionSince: now,
      health: null,
      healthySince: null,
      updatedAt: now,
    });
    this.outbox.enqueue(nodeId, {
      kind: 'deploy',
      job: definitionAt(this.store, job, instance.version),
      instance: instance.number,
      generation,
      worker: [nodeId],
    });
  }

  stop(): void {
    this.ledger.stop();
  }
}
