import type { HealthState, InstanceStatus } from '../../shared/index.js';
import type { CommandOutbox } from '../dispatch/command-outbox.js';
import type { OverlayAddresses } from '../network/overlay-addresses.js';
import { definitionAt, type InstanceRecord, type JobRecord, type Store } from '../store/index.js';
import type { Evaluations, EvaluationTrigger } from './evaluations.js';
import { transition } from './instance-states.js';
import { abandonMove } from './moves.js';

/**
 * Adds `count` instances of the job's current version under the lowest free numbers, each with a new instance
 * IP (409 when the overlay has too few left), and places them now. Call inside a transaction. Returns their
 * numbers.
 */
export function addInstances(
  store: Store,
  addresses: OverlayAddresses,
  evaluations: Evaluations,
  job: JobRecord,
  count: number,
  trigger: EvaluationTrigger,
  now: number,
): number[] {
  if (count <= 0) return [];
  const taken = new Set(store.jobs.instancesOf(job.id).map((instance) => instance.number));
  const numbers: number[] = [];
  for (let number = 0; numbers.length < count; number++) if (!taken.has(number)) numbers.push(number);
  const instanceIps = addresses.take(numbers.length);
  for (const [index, number] of numbers.entries())
    store.jobs.insertInstance(newInstance(job, number, instanceIps[index]!, now));
  evaluations.evaluate(job, numbers, trigger, now);
  return numbers;
}

export function newInstance(job: JobRecord, number: number, instanceIp: string, now: number): InstanceRecord {
  return {
    jobId: job.id,
    number,
    nodeId: null,
    status: 'pending',
    detail: 'waiting for placement',
    containerId: null,
    generation: 0,
    restarts: 0,
    startedAt: null,
    exitCode: null,
    updatedAt: now,
    instanceIp,
    namespaceIp: null,
    reschedules: [],
    version: job.version,
    versionSince: now,
    health: null,
    healthySince: null,
  };
}

/**
 * Sends `delete` for one instance; it disappears when its node acks. Unplaced ones go at once. A move of it
 * under way is given up first, so that its target removes the copy it may already run. Call inside a
 * transaction.
 */
export function stopInstance(
  store: Store,
  outbox: CommandOutbox,
  job: JobRecord,
  instance: InstanceRecord,
  reason: string,
  now: number,
): void {
  if (!instance.nodeId) {
    store.jobs.removeInstance(job.id, instance.number);
    return;
  }
  const move = store.moves.get(job.id, instance.number);
  if (move) abandonMove(store, outbox, job, move, reason);
  const next = transition(instance.status, { kind: 'stopAsked' });
  if ('status' in next)
    store.jobs.updateInstance({
      ...instance,
      status: next.status,
      health: null,
      healthySince: null,
      updatedAt: now,
    });
  outbox.enqueueDelete(
    instance.nodeId,
    definitionAt(store, job, instance.version),
    instance.number,
    instance.generation,
  );
}

/**
 * An instance's health after a report: running and passing its check (or running, without one) is healthy,
 * since the first time the cluster manager heard so; anything else is not.
 */
export function healthAfter(
  instance: Pick<InstanceRecord, 'healthySince'>,
  status: InstanceStatus,
  health: HealthState | undefined,
  now: number,
): { health: HealthState | null; healthySince: number | null } {
  if (status !== 'running') return { health: null, healthySince: null };
  const healthy = health === undefined || health === 'healthy';
  return { health: health ?? null, healthySince: healthy ? (instance.healthySince ?? now) : null };
}
