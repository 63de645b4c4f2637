import type { InstanceStatus } from '../../shared/index.js';

/**
 * The life of an instance as the cluster manager keeps it, in one place: every status, what each message does
 * to it, what holds resources, what counts towards the job's replicas, and when the row goes.
 *
 *   pending --placed--> scheduled --reports--> pulling | creating | running | exited | failed
 *   any placed, live status --node offline--> lost --reports or telemetry--> what the node says
 *   any placed status --stop asked (scale down, job delete)--> stopping --report stopped--> stopped
 *   stopping | stopped --delete acked by its node--> (row removed)
 *   any placed status --its node removed by an operator--> pending (placed again) | (row removed, if leaving)
 *   any placed, live status --command refused--> failed
 *
 * `stopping` and `stopped` are on their way out: nothing the node reports brings them back, they never count
 * towards `replicas`, and the row goes once the node acks the delete, whichever of the `stopped` report and the
 * ack comes first.
 */
export type InstanceMessage =
  /** A status report from the node that holds the instance at its generation. */
  | { kind: 'report'; status: InstanceStatus }
  /** The node listed the instance with this status in its telemetry. */
  | { kind: 'listed'; status: InstanceStatus }
  /** Its node went offline. */
  | { kind: 'nodeOffline' }
  /** The job was scaled down past it, or deleted. */
  | { kind: 'stopAsked' }
  /** Its node refused the command that runs it. */
  | { kind: 'refused' }
  /** Its node acked the `delete` of it (at its generation or a newer one). */
  | { kind: 'deleteAcked' }
  /**
   * An operator removed its node: nothing will be heard of it there again. `mayRunAgain` is false for a job
   * whose `restart: never` says a failed instance must not run again.
   */
  | { kind: 'nodeRemoved'; mayRunAgain: boolean };

/** What a message does: a new status, the row removed, or nothing. */
export type Transition = { status: InstanceStatus } | { remove: true } | { ignore: true };

const LEAVING: ReadonlySet<InstanceStatus> = new Set(['stopping', 'stopped']);
/** Statuses that hold no resources on a node: nothing runs, or nothing will. */
const RELEASED: ReadonlySet<InstanceStatus> = new Set(['pending', 'failed', 'stopped']);
/** Statuses of instances a node must list in its telemetry: it was told to run them. */
const EXPECTED_ON_NODE: ReadonlySet<InstanceStatus> = new Set([
  'scheduled',
  'pulling',
  'creating',
  'running',
  'exited',
  'lost',
]);
/** Statuses an offline node takes with it: what it may still run. */
const LOST_WITH_NODE: ReadonlySet<InstanceStatus> = new Set([
  'scheduled',
  'pulling',
  'creating',
  'running',
  'exited',
]);

export function transition(current: InstanceStatus, message: InstanceMessage): Transition {
  switch (message.kind) {
    case 'report':
      if (current === 'stopping')
        return message.status === 'stopped' ? { status: 'stopped' } : { ignore: true };
      // `pending` has no node: whatever a node says of it is stale.
      if (current === 'stopped' || current === 'pending' || current === message.status)
        return { ignore: true };
      // A node never reports `stopping` or `pending` of its own; `stopped` unasked means it ended for good.
      if (message.status === 'stopping' || message.status === 'pending') return { ignore: true };
      return { status: message.status };
    case 'listed':
      if (LEAVING.has(current) || current === message.status || current === 'pending')
        return { ignore: true };
      if (message.status === 'stopping' || message.status === 'pending') return { ignore: true };
      return { status: message.status };
    case 'nodeOffline':
      return LOST_WITH_NODE.has(current) ? { status: 'lost' } : { ignore: true };
    case 'stopAsked':
      return LEAVING.has(current) ? { ignore: true } : { status: 'stopping' };
    case 'refused':
      return LEAVING.has(current) || current === 'pending' || current === 'failed'
        ? { ignore: true }
        : { status: 'failed' };
    case 'deleteAcked':
      return LEAVING.has(current) ? { remove: true } : { ignore: true };
    case 'nodeRemoved':
      if (LEAVING.has(current)) return { remove: true };
      if (current === 'failed' && !message.mayRunAgain) return { ignore: true };
      return current === 'pending' ? { ignore: true } : { status: 'pending' };
  }
}

/** On its way out: asked to stop, or stopped after that. */
export function isLeaving(status: InstanceStatus): boolean {
  return LEAVING.has(status);
}

/** Counts towards the job's `replicas`: everything not on its way out. */
export function countsTowardsReplicas(status: InstanceStatus): boolean {
  return !LEAVING.has(status);
}

/** Holds its resources (cpus, memory, GPUs, host ports) on its node. */
export function holdsResources(instance: { nodeId: string | null; status: InstanceStatus }): boolean {
  return instance.nodeId !== null && !RELEASED.has(instance.status);
}

/** Its node was told to run it and must list it in telemetry. */
export function expectedOnNode(status: InstanceStatus): boolean {
  return EXPECTED_ON_NODE.has(status);
}
