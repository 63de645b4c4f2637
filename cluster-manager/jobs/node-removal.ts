import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { NodeRecord, Store } from '../store/index.js';
import { transition } from './instance-states.js';
import { abandonMove } from './moves.js';

export interface NodeRemoval {
  /** Instances that ran there and wait for another node now (same number and instance IP). */
  placedAgain: number;
  /** Instances on their way out that were waiting for this node's ack: done with. */
  finished: number;
  /** Jobs in `deleting` that waited only for this node: gone. */
  jobsDeleted: number;
}

/**
 * An operator removed a node, in one transaction: its moves are abandoned; what it ran goes back to `pending`
 * (placed again by the next evaluation; a failed instance of a `restart: never` job stays failed) and what was
 * leaving is done with; its unacked commands are dropped, so jobs in `deleting` that waited for its ack finish;
 * its route-table interest goes; the node row goes (its subnet is free) and its secret is revoked. The caller
 * then disconnects it and forgets it in memory (liveness, outbox).
 */
export function removeNode(
  store: Store,
  outbox: CommandOutbox,
  node: NodeRecord,
  now = Date.now(),
): NodeRemoval {
  const result: NodeRemoval = { placedAgain: 0, finished: 0, jobsDeleted: 0 };
  const reason = `node ${node.name} was removed`;
  store.transaction(() => {
    for (const move of store.moves.all()) {
      const holder = store.jobs.getInstance(move.jobId, move.number)?.nodeId;
      const job = store.jobs.getJob(move.jobId);
      if (job && (move.toNode === node.id || move.fromNode === node.id || holder === node.id))
        abandonMove(store, outbox, job, move, reason);
    }
    for (const instance of store.jobs.instancesOnNode(node.id)) {
      const job = store.jobs.getJob(instance.jobId);
      const mayRunAgain = job?.spec.restart.policy !== 'never';
      const next = transition(instance.status, { kind: 'nodeRemoved', mayRunAgain });
      if ('remove' in next) {
        store.jobs.removeInstance(instance.jobId, instance.number);
        result.finished++;
      } else {
        const status = 'status' in next ? next.status : instance.status;
        if (status === 'pending') result.placedAgain++;
        store.jobs.updateInstance({
          ...instance,
          status,
          nodeId: null,
          detail: status === 'pending' ? `${reason}: waiting for a node` : `${reason}; ${instance.detail}`,
          containerId: null,
          namespaceIp: null,
          updatedAt: now,
        });
      }
    }
    for (const jobId of store.commands.forgetNode(node.id)) {
      const job = store.jobs.getJob(jobId);
      if (job?.state !== 'deleting' || store.commands.unackedForJob(jobId, 'delete').length > 0) continue;
      store.jobs.removeJob(jobId);
      store.events.record('job.deleted', `job ${job.name} deleted`, { jobId });
      result.jobsDeleted++;
    }
    store.netInterest.forgetNode(node.id);
    store.nodes.remove(node.id, now);
    store.events.record(
      'node.removed',
      `node ${node.name} removed by an operator: ${result.placedAgain} instances to place again, its secret revoked`,
      { nodeId: node.id },
    );
  });
  outbox.forgetNode(node.id);
  return result;
}
