import type { Instance, InstanceStatus, Job, Rollout } from '../../shared/index.js';
import { instanceView, type JobRecord, type Store } from '../store/index.js';
import { rolloutProgress } from './rollouts.js';

/** A job as the API shows it: the spec, its state, every instance and counts by status. */
export function jobView(store: Store, job: JobRecord): Job {
  const instances: Instance[] = store.jobs
    .instancesOf(job.id)
    .map((instance) =>
      instanceView(instance, instance.nodeId ? (store.nodes.get(instance.nodeId)?.name ?? null) : null),
    );
  const instanceCounts: Partial<Record<InstanceStatus, number>> = {};
  for (const instance of instances)
    instanceCounts[instance.status] = (instanceCounts[instance.status] ?? 0) + 1;
  return {
    id: job.id,
    ...job.spec,
    version: job.version,
    ...(job.rollout ? { rollout: rolloutView(store, job, job.rollout) } : {}),
    state: job.state,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    ...(job.serviceIp ? { serviceIp: job.serviceIp } : {}),
    instances,
    instanceCounts,
  };
}

/** A running roll-out says how far it is now; one that ended says how it ended. */
function rolloutView(store: Store, job: JobRecord, rollout: Rollout): Rollout {
  return rollout.state === 'running' && rollout.version === job.version
    ? { ...rollout, detail: rolloutProgress(store, job) }
    : rollout;
}
