import type { InstanceStatusReport } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import {
  definitionAt,
  type InstanceRecord,
  type JobRecord,
  type MoveRecord,
  type Store,
} from '../store/index.js';
import { healthAfter } from './instance-lifecycle.js';

/**
 * The end of a make-before-break move. Call inside a transaction. The target runs the instance: it becomes the
 * holder under the move's generation, and the source is told to delete its copy.
 */
export function completeMove(
  store: Store,
  outbox: CommandOutbox,
  job: JobRecord,
  instance: InstanceRecord,
  move: MoveRecord,
  report: InstanceStatusReport,
  now: number,
): void {
  store.moves.remove(move.jobId, move.number);
  outbox.enqueueDelete(
    move.fromNode,
    definitionAt(store, job, instance.version),
    move.number,
    instance.generation,
  );
  store.jobs.updateInstance({
    ...instance,
    nodeId: move.toNode,
    generation: move.generation,
    status: 'running',
    detail: '',
    containerId: report.containerId,
    startedAt: report.startedAt ?? now,
    restarts: 0,
    exitCode: null,
    // The instance IP stays; the namespace IP is the one the target gave it (none if its overlay is off).
    namespaceIp: report.namespaceIp ?? null,
    ...healthAfter({ healthySince: null }, 'running', report.health, now),
    updatedAt: now,
  });
  store.events.record('move.done', `${job.name}#${move.number} moved to ${store.nodes.nameOf(move.toNode)}`, {
    jobId: job.id,
    nodeId: move.toNode,
  });
}

/**
 * A move that cannot finish: the instance stays on its source, and the target is told to delete whatever it
 * started. Call inside a transaction.
 */
export function abandonMove(
  store: Store,
  outbox: CommandOutbox,
  job: JobRecord,
  move: MoveRecord,
  reason: string,
): void {
  store.moves.remove(move.jobId, move.number);
  const version = store.jobs.getInstance(job.id, move.number)?.version ?? job.version;
  outbox.enqueueDelete(move.toNode, definitionAt(store, job, version), move.number, move.generation);
  store.events.record('move.failed', `move of ${job.name}#${move.number} failed: ${reason}`, {
    jobId: job.id,
    nodeId: move.toNode,
  });
}
