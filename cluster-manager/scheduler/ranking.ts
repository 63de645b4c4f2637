import type { JobDefinition } from '../../shared/index.js';
import type { SchedulableNode } from './types.js';

/** A rank scorer as a comparator: negative when `a` is the better node. */
export type NodeComparator = (a: SchedulableNode, b: SchedulableNode) => number;

/** Spread: replicas of one job on as many nodes as possible, so one lost node loses few of them. */
export function fewestInstancesOf(jobId: string): NodeComparator {
  return (a, b) => (a.instancesByJob[jobId] ?? 0) - (b.instancesByJob[jobId] ?? 0);
}

/** Among equally spread nodes, the one with the most headroom left. */
export const mostFreeFraction: NodeComparator = (a, b) => freeFraction(b) - freeFraction(a);

/** Names (then ids) break ties, so the same inputs always give the same placements. */
export const byName: NodeComparator = (a, b) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

export function composeComparators(...comparators: NodeComparator[]): NodeComparator {
  return (a, b) => {
    for (const compare of comparators) {
      const order = compare(a, b);
      if (order !== 0) return order;
    }
    return 0;
  };
}

/** Spread by default: among otherwise equal nodes, the one running the fewest instances of any job. */
export const fewestInstances: NodeComparator = (a, b) => a.instanceCount - b.instanceCount;

/**
 * The feasible nodes, best first, for one more instance of the job: its own replicas spread first; then, for a
 * job that asks for cpus or memory, the most headroom left; for one that asks for neither (it takes no
 * headroom, so headroom alone would send every such job to the same node), the fewest instances first.
 */
export function rankNodes(
  jobId: string,
  nodes: readonly SchedulableNode[],
  job?: Pick<JobDefinition, 'resources'>,
): SchedulableNode[] {
  const asksResources = job?.resources.cpus !== undefined || job?.resources.memoryMB !== undefined;
  const order =
    asksResources || !job ? [mostFreeFraction, fewestInstances] : [fewestInstances, mostFreeFraction];
  return [...nodes].sort(composeComparators(fewestInstancesOf(jobId), ...order, byName));
}

/** The mean of the free cpu and free memory fractions (0..1); a resource with no capacity counts as full. */
export function freeFraction(node: SchedulableNode): number {
  const fraction = (capacity: number, allocated: number) =>
    capacity > 0 ? Math.max(0, capacity - allocated) / capacity : 0;
  return (
    (fraction(node.capacity.cpus, node.allocated.cpus) +
      fraction(node.capacity.memoryBytes, node.allocated.memoryBytes)) /
    2
  );
}
