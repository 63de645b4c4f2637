import type { JobDefinition } from '../../shared/index.js';
import { whyInfeasible } from './feasibility.js';
import { rankNodes } from './ranking.js';
import { summarizeReasons } from './summary.js';
import type { MoveTarget, SchedulableNode } from './types.js';

/**
 * The node to move an instance to: `to` (a node id or name) when given, which must exist, differ from the
 * source and fit; otherwise the best node other than the source. The source keeps the instance's resources
 * booked until the move completes (make-before-break), so they are not counted as free anywhere.
 * Summaries leave out "cannot move instance N": the caller words the refusal.
 */
export function pickMoveTarget(
  job: JobDefinition,
  instance: number,
  fromNodeId: string,
  nodes: readonly SchedulableNode[],
  to?: string,
): MoveTarget {
  const runsHere = `instance ${instance} runs here already`;
  if (to !== undefined) {
    const target = nodes.find((node) => node.id === to) ?? nodes.find((node) => node.name === to);
    if (!target) return refuse(to, 'no such node', `no node ${to}`);
    if (target.id === fromNodeId) {
      return refuse(target.name, runsHere, `instance ${instance} runs on ${target.name} already`);
    }
    const reason = whyInfeasible(job, target);
    if (reason !== null) return refuse(target.name, reason, `${target.name}: ${reason}`);
    return { nodeId: target.id };
  }
  const reasons: Record<string, string> = {};
  const feasible: SchedulableNode[] = [];
  for (const node of nodes) {
    const reason = node.id === fromNodeId ? runsHere : whyInfeasible(job, node);
    if (reason === null) feasible.push(node);
    else reasons[node.name] = reason;
  }
  const best = rankNodes(job.id, feasible, job)[0];
  if (best) return { nodeId: best.id };
  return { reasons, summary: summarizeReasons(reasons, 'no other node fits') };
}

function refuse(node: string, reason: string, summary: string): MoveTarget {
  return { reasons: { [node]: reason }, summary };
}
