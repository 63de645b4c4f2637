import type { JobDefinition } from '../../shared/index.js';
import { hostPortsOf, whyInfeasible } from './feasibility.js';
import { rankNodes } from './ranking.js';
import { summarizeReasons } from './summary.js';
import type { PlacementResult, SchedulableNode } from './types.js';

const MIB = 1024 * 1024;

/**
 * Fleets up to this many nodes have every node scored for every instance. Larger ones score a bounded sample,
 * as Nomad does: feasible nodes are collected from a starting point of the instance's own (a hash of job id
 * and number, so the same inputs give the same placement and replicas start far apart) until CANDIDATES are
 * found, and the best of those wins. Ranking a few dozen random feasible nodes finds one as good as the best
 * for spread and headroom with near certainty (the power of many choices), at a cost independent of fleet size
 * for any job that fits in most places; a job that fits few nodes still scans until it finds them.
 */
export const SCORE_ALL_UP_TO = 256;
export const CANDIDATES = 32;

export interface PlaceOptions {
  /** Feasible nodes to rank per instance on a large fleet; Infinity scores every node (the baseline). */
  candidates?: number;
}

/**
 * Places each instance number on the best feasible node. Pure: the nodes passed in are not changed; each
 * placement is booked on a working copy of its node so that the next instance of the same call sees it.
 */
export function placeInstances(
  job: JobDefinition,
  instanceNumbers: number[],
  nodes: readonly SchedulableNode[],
  options: PlaceOptions = {},
): PlacementResult {
  const limit =
    nodes.length <= SCORE_ALL_UP_TO ? Number.POSITIVE_INFINITY : (options.candidates ?? CANDIDATES);
  const pool = namedNodes(job, nodes) ?? nodes;
  const booked = new Map<string, SchedulableNode>();
  const current = (node: SchedulableNode) => booked.get(node.id) ?? node;
  const result: PlacementResult = { placements: [], unplaced: [] };
  for (const instance of instanceNumbers) {
    const feasible: SchedulableNode[] = [];
    const start = pool.length > 0 ? hash(`${job.id}/${instance}`) % pool.length : 0;
    for (let i = 0; i < pool.length && feasible.length < limit; i++) {
      const node = current(pool[(start + i) % pool.length]!);
      if (whyInfeasible(job, node) === null) feasible.push(node);
    }
    const best = rankNodes(job.id, feasible, job)[0];
    if (best) {
      const copy = booked.get(best.id) ?? cloneNode(best);
      bookInstance(job, copy);
      booked.set(copy.id, copy);
      result.placements.push({ instance, nodeId: best.id });
    } else {
      // Only when nothing fits: every node's reason, for the instance's `detail`.
      const reasons: Record<string, string> = {};
      for (const node of nodes) reasons[node.name] = whyInfeasible(job, current(node)) ?? 'not chosen';
      result.unplaced.push({ instance, reasons, summary: summarizeReasons(reasons) });
    }
  }
  return result;
}

/** A job pinned to named nodes looks at those alone (in fleet order); undefined when it names none. */
function namedNodes(job: JobDefinition, nodes: readonly SchedulableNode[]): SchedulableNode[] | undefined {
  const named = job.constraints.nodes;
  if (!named || named.length === 0) return undefined;
  const wanted = new Set(named);
  return nodes.filter((node) => wanted.has(node.id) || wanted.has(node.name));
}

/** FNV-1a, 32 bits: a cheap, stable spread of starting points. */
function hash(text: string): number {
  let value = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    value ^= text.charCodeAt(i);
    value = Math.imul(value, 0x01000193);
  }
  return value >>> 0;
}

/** Books one instance of the job on the node: its resources, host ports and spread counts. */
export function bookInstance(job: JobDefinition, node: SchedulableNode): void {
  node.allocated.cpus += job.resources.cpus ?? 0;
  node.allocated.memoryBytes += (job.resources.memoryMB ?? 0) * MIB;
  node.allocated.gpus += job.resources.gpus;
  node.usedHostPorts.push(...hostPortsOf(job));
  node.instancesByJob[job.id] = (node.instancesByJob[job.id] ?? 0) + 1;
  node.instanceCount++;
}

/** Takes one booked instance of the job off a copy of the node: what it holds if that instance leaves. */
export function withoutInstance(job: JobDefinition, node: SchedulableNode): SchedulableNode {
  const copy = cloneNode(node);
  copy.allocated.cpus -= job.resources.cpus ?? 0;
  copy.allocated.memoryBytes -= (job.resources.memoryMB ?? 0) * MIB;
  copy.allocated.gpus -= job.resources.gpus;
  for (const port of hostPortsOf(job)) {
    const at = copy.usedHostPorts.indexOf(port);
    if (at >= 0) copy.usedHostPorts.splice(at, 1);
  }
  const held = (copy.instancesByJob[job.id] ?? 0) - 1;
  if (held > 0) copy.instancesByJob[job.id] = held;
  else delete copy.instancesByJob[job.id];
  copy.instanceCount--;
  return copy;
}

export function cloneNode(node: SchedulableNode): SchedulableNode {
  return {
    ...node,
    capacity: { ...node.capacity },
    allocated: { ...node.allocated },
    usedHostPorts: [...node.usedHostPorts],
    instancesByJob: { ...node.instancesByJob },
  };
}
