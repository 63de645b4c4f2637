import type { JobDefinition } from '../../shared/index.js';
import { hostPortsOf, whyInfeasible } from './feasibility.js';
import { rankNodes } from './ranking.js';
import { summarizeReasons } from './summary.js';
import type { PlacementResult, SchedulableNode } from './types.js';

const MIB = 1024 * 1024;

/**
 * Places each instance number on the best feasible node. Pure: the nodes passed in are not changed; each
 * placement is booked on a working copy so that the next instance of the same call sees it.
 */
export function placeInstances(
  job: JobDefinition,
  instanceNumbers: number[],
  nodes: SchedulableNode[],
): PlacementResult {
  const working = nodes.map(cloneNode);
  const result: PlacementResult = { placements: [], unplaced: [] };
  for (const instance of instanceNumbers) {
    const reasons: Record<string, string> = {};
    const feasible: SchedulableNode[] = [];
    for (const node of working) {
      const reason = whyInfeasible(job, node);
      if (reason === null) feasible.push(node);
      else reasons[node.name] = reason;
    }
    const best = rankNodes(job.id, feasible)[0];
    if (best) {
      bookInstance(job, best);
      result.placements.push({ instance, nodeId: best.id });
    } else {
      result.unplaced.push({ instance, reasons, summary: summarizeReasons(reasons) });
    }
  }
  return result;
}

/** Books one instance of the job on the node: its resources, host ports and spread count. */
export function bookInstance(job: JobDefinition, node: SchedulableNode): void {
  node.allocated.cpus += job.resources.cpus ?? 0;
  node.allocated.memoryBytes += (job.resources.memoryMB ?? 0) * MIB;
  node.allocated.gpus += job.resources.gpus;
  node.usedHostPorts.push(...hostPortsOf(job));
  node.instancesByJob[job.id] = (node.instancesByJob[job.id] ?? 0) + 1;
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
