import { hostPortsOf } from '../scheduler/feasibility.js';
import type { SchedulableNode } from '../scheduler/types.js';
import { definitionAt, labelsOf, type NodeRecord, type Store } from '../store/index.js';
import { holdsResources } from './instance-states.js';

const MIB = 1024 * 1024;

/**
 * What one version of a job holds on its nodes: its instances there (placed or moving in) and what each asked
 * for. A job holds one per version its instances run (two or more only while a roll-out replaces them).
 */
interface JobCharge {
  /** Node id -> how many of the job's instances (and moves in flight) it holds there. */
  counts: Map<string, number>;
  cpus: number;
  memoryBytes: number;
  gpus: number;
  hostPorts: string[];
}

/**
 * The scheduler's view of the fleet, kept in memory between decisions: every node as a SchedulableNode with what
 * its instances and the moves in flight to it hold. Building it from every node, job, instance and move for each
 * job posted costs tens of milliseconds at 10,000 nodes; this keeps it and refreshes only what changed.
 *
 * Changes are learnt from the stores' change feeds: a write to a job, its instances or its moves marks the job
 * dirty, and the next look re-reads that job's rows and charges its nodes again. A look inside a transaction sees
 * its writes; a rollback tells the feeds again, so the jobs it touched are charged again from what stands. Nodes
 * are rebuilt when a registration changed their info, and their status is read on every look. The scheduler never
 * writes to what it gets: it books on copies.
 */
export class AllocationLedger {
  private readonly charges = new Map<string, JobCharge[]>();
  private readonly dirtyJobs = new Set<string>();
  private readonly nodes = new Map<string, SchedulableNode>();
  private ordered: SchedulableNode[] = [];
  private nodesVersion = -1;
  private readonly unsubscribe: (() => void)[];

  constructor(
    private readonly store: Store,
    private readonly isOnline: (nodeId: string) => boolean,
  ) {
    this.unsubscribe = [
      store.jobs.changes.subscribe((jobId) => this.dirtyJobs.add(jobId)),
      store.moves.changes.subscribe((jobId) => this.dirtyJobs.add(jobId)),
    ];
    for (const job of store.jobs.listJobs()) this.dirtyJobs.add(job.id);
  }

  stop(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
  }

  /** Every node, by name, with its allocations and status as of now. */
  schedulableNodes(): SchedulableNode[] {
    this.refreshNodes();
    for (const jobId of this.dirtyJobs) this.recharge(jobId);
    this.dirtyJobs.clear();
    for (const node of this.ordered) node.status = this.isOnline(node.id) ? 'online' : 'offline';
    return this.ordered;
  }

  /** The same nodes by id (one refresh for any number of lookups, as a page of node views makes). */
  byId(): ReadonlyMap<string, SchedulableNode> {
    this.schedulableNodes();
    return this.nodes;
  }

  private refreshNodes(): void {
    const version = this.store.nodes.version;
    if (version === this.nodesVersion) return;
    this.nodesVersion = version;
    const records = this.store.nodes.list();
    const next = new Map<string, SchedulableNode>();
    for (const record of records) next.set(record.id, this.nodeFrom(record, this.nodes.get(record.id)));
    this.nodes.clear();
    for (const [id, node] of next) this.nodes.set(id, node);
    this.ordered = records.map((record) => next.get(record.id)!);
  }

  /** A node's static facts from its record; what it holds carried over from before. */
  private nodeFrom(record: NodeRecord, previous: SchedulableNode | undefined): SchedulableNode {
    const node = schedulableNodeOf(record, false);
    if (!previous) return node;
    const { allocated, usedHostPorts, instancesByJob, instanceCount } = previous;
    return { ...node, allocated, usedHostPorts, instancesByJob, instanceCount };
  }

  /** Takes the job's old charges off its nodes and puts its current ones on. */
  private recharge(jobId: string): void {
    for (const old of this.charges.get(jobId) ?? []) this.apply(jobId, old, -1);
    this.charges.delete(jobId);
    const job = this.store.jobs.getJob(jobId);
    if (!job) return;
    const countsByVersion = new Map<number, Map<string, number>>();
    // Rows naming a node this view does not know charge nothing (the view rebuilds its nodes first, so there is
    // no such node); charging and uncharging use the same counts.
    const add = (version: number, nodeId: string) => {
      if (!this.nodes.has(nodeId)) return;
      let counts = countsByVersion.get(version);
      if (!counts) {
        counts = new Map();
        countsByVersion.set(version, counts);
      }
      counts.set(nodeId, (counts.get(nodeId) ?? 0) + 1);
    };
    const instances = this.store.jobs.instancesOf(jobId);
    for (const instance of instances) if (holdsResources(instance)) add(instance.version, instance.nodeId!);
    for (const move of this.store.moves.ofJob(jobId)) {
      const version = instances.find((instance) => instance.number === move.number)?.version ?? job.version;
      add(version, move.toNode);
    }
    if (countsByVersion.size === 0) return;
    const charges: JobCharge[] = [];
    for (const [version, counts] of countsByVersion) {
      const definition = definitionAt(this.store, job, version);
      const { resources } = definition;
      charges.push({
        counts,
        cpus: resources.cpus ?? 0,
        memoryBytes: (resources.memoryMB ?? 0) * MIB,
        gpus: resources.gpus,
        hostPorts: hostPortsOf(definition),
      });
    }
    this.charges.set(jobId, charges);
    for (const charge of charges) this.apply(jobId, charge, 1);
  }

  private apply(jobId: string, charge: JobCharge, sign: 1 | -1): void {
    for (const [nodeId, count] of charge.counts) {
      // A node removed since the charge was made has gone from the view with what it held: nothing to take off.
      const node = this.nodes.get(nodeId);
      if (!node) continue;
      node.allocated.cpus += sign * count * charge.cpus;
      node.allocated.memoryBytes += sign * count * charge.memoryBytes;
      node.allocated.gpus += sign * count * charge.gpus;
      node.instanceCount += sign * count;
      const held = (node.instancesByJob[jobId] ?? 0) + sign * count;
      if (held > 0) node.instancesByJob[jobId] = held;
      else delete node.instancesByJob[jobId];
      for (let i = 0; i < count; i++) {
        for (const port of charge.hostPorts) {
          if (sign > 0) node.usedHostPorts.push(port);
          else node.usedHostPorts.splice(node.usedHostPorts.indexOf(port), 1);
        }
      }
    }
  }
}

/** A node as the scheduler sees it, holding nothing yet. */
export function schedulableNodeOf(record: NodeRecord, online: boolean): SchedulableNode {
  return {
    id: record.id,
    name: record.name,
    status: online ? 'online' : 'offline',
    ...(record.cordoned ? { cordoned: true } : {}),
    arch: record.info.arch,
    runtimes: record.info.runtimes,
    labels: labelsOf(record),
    sensors: record.info.sensors,
    ...(record.info.allowed ? { allowed: record.info.allowed } : {}),
    capacity: { cpus: record.info.cpus, memoryBytes: record.info.memoryBytes, gpus: record.info.gpus.length },
    allocated: { cpus: 0, memoryBytes: 0, gpus: 0 },
    usedHostPorts: [],
    instancesByJob: {},
    instanceCount: 0,
  };
}
