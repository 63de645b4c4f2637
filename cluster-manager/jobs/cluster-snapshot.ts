import type { SchedulableNode } from '../scheduler/types.js';
import type { JobRecord, NodeRecord, Store } from '../store/index.js';
import { holdsResources } from './instance-states.js';

/** Up to this many nodes, their allocations are read node by node instead of from every instance. */
const FEW_NODES = 64;

/**
 * The scheduler's view of the cluster: each node with what its placed instances (and moves in flight to it)
 * requested. Built fresh for each decision; the scheduler itself never touches the store.
 */
export function schedulableNodes(
  store: Store,
  isOnline: (nodeId: string) => boolean,
  nodes: NodeRecord[] = store.nodes.list(),
): SchedulableNode[] {
  // A few nodes (a page of the API, one node's view) are charged from their own rows; the whole fleet from
  // one pass over every instance and move.
  const few = nodes.length <= FEW_NODES && nodes.length < store.nodes.count;
  const jobs = new Map<string, JobRecord | undefined>();
  const jobOf = (jobId: string) => {
    if (!jobs.has(jobId)) jobs.set(jobId, store.jobs.getJob(jobId));
    return jobs.get(jobId);
  };
  if (!few) for (const job of store.jobs.listJobs()) jobs.set(job.id, job);
  const byNode = new Map<string, SchedulableNode>();
  for (const node of nodes) byNode.set(node.id, schedulableNodeOf(node, isOnline(node.id)));
  const charge = (nodeId: string, jobId: string) => {
    const node = byNode.get(nodeId);
    const job = jobOf(jobId);
    if (!node || !job) return;
    const { resources, ports } = job.spec;
    node.allocated.cpus += resources.cpus ?? 0;
    node.allocated.memoryBytes += (resources.memoryMB ?? 0) * 1024 * 1024;
    node.allocated.gpus += resources.gpus;
    for (const port of ports)
      if (port.host !== undefined) node.usedHostPorts.push(`${port.protocol}/${port.host}`);
    node.instancesByJob[jobId] = (node.instancesByJob[jobId] ?? 0) + 1;
    node.instanceCount++;
  };
  const instances = few
    ? nodes.flatMap((node) => store.jobs.instancesOnNode(node.id))
    : store.jobs.allInstances();
  for (const instance of instances) if (holdsResources(instance)) charge(instance.nodeId!, instance.jobId);
  const moves = few ? nodes.flatMap((node) => store.moves.toNode(node.id)) : store.moves.all();
  for (const move of moves) charge(move.toNode, move.jobId);
  return [...byNode.values()];
}

/** A node as the scheduler sees it, holding nothing yet. */
export function schedulableNodeOf(record: NodeRecord, online: boolean): SchedulableNode {
  return {
    id: record.id,
    name: record.name,
    status: online ? 'online' : 'offline',
    arch: record.info.arch,
    runtimes: record.info.runtimes,
    labels: record.info.labels,
    sensors: record.info.sensors,
    capacity: { cpus: record.info.cpus, memoryBytes: record.info.memoryBytes, gpus: record.info.gpus.length },
    allocated: { cpus: 0, memoryBytes: 0, gpus: 0 },
    usedHostPorts: [],
    instancesByJob: {},
    instanceCount: 0,
  };
}
