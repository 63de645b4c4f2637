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

/** The feasible nodes, best first, for one more instance of the job. */
export function rankNodes(jobId: string, nodes: readonly SchedulableNode[]): SchedulableNode[] {
  return [...nodes].sort(composeComparators(fewestInstancesOf(jobId), mostFreeFraction, byName));
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
