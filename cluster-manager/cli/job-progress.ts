import type { Instance, Job, JobChange, JobPlan } from '../../shared/index.js';

/** Where a followed job stands: every instance running, one that cannot run (and why), or still on its way. */
export type JobOutcome = { done: 'running' } | { done: 'cannot run'; reason: string } | { done: false };

/** One line per instance whose status, node or detail changed since `seen` (which it updates). */
export function progressLines(job: Job, seen: Map<number, string>): string[] {
  const lines: string[] = [];
  for (const instance of job.instances) {
    const line = describeInstance(job.name, instance);
    if (seen.get(instance.number) === line) continue;
    seen.set(instance.number, line);
    lines.push(line);
  }
  return lines;
}

function describeInstance(jobName: string, instance: Instance): string {
  const where = instance.nodeName ?? instance.nodeId;
  return [
    `${jobName}#${instance.number}`,
    instance.status,
    ...(where ? [`on ${where}`] : []),
    ...(instance.detail ? [`(${instance.detail})`] : []),
  ].join(' ');
}

/**
 * What `deploy --wait` makes of the job now: done when every instance runs; cannot run when one waits for a node
 * (no node fits: the reasons are in its detail) or its restart policy gave up (`failed`). An instance that retries
 * a pull or a start after a back-off is still on its way: the caller's timeout decides.
 */
export function outcomeOf(job: Job): JobOutcome {
  const stuck = job.instances.find(
    (instance) => instance.status === 'pending' || instance.status === 'failed',
  );
  if (stuck)
    return {
      done: 'cannot run',
      reason: `${job.name}#${stuck.number} ${stuck.status}${stuck.detail ? `: ${stuck.detail}` : ''}`,
    };
  if (job.instances.length > 0 && job.instances.every((instance) => instance.status === 'running'))
    return { done: 'running' };
  return { done: false };
}

/**
 * Where a followed roll-out of `version` stands: it succeeded, it did not (failed, or another update came first;
 * a failed one may already be reverting), or it is on its way (`progress` says how far, in words).
 */
export type RolloutOutcome =
  | { done: 'succeeded' }
  | { done: 'failed'; reason: string }
  | { done: false; progress: string };

export function rolloutOutcomeOf(job: Job, version: number): RolloutOutcome {
  const rollout = job.rollout;
  if (!rollout) return { done: 'succeeded' };
  if (rollout.version === version) {
    if (rollout.state === 'succeeded') return { done: 'succeeded' };
    if (rollout.state === 'running') return { done: false, progress: rollout.detail };
    return { done: 'failed', reason: `version ${version} ${rollout.state}: ${rollout.detail}` };
  }
  if (rollout.revertOf === version)
    return {
      done: 'failed',
      reason: `version ${version} failed; reverting to the last stable version as version ${rollout.version}`,
    };
  return { done: 'failed', reason: `version ${version} was superseded by version ${job.version}` };
}

/** What `apply` says it did: `job web updated to version 3 (image changed): rolling out`. */
export function describeChange(job: Job, change: JobChange): string {
  const fields = change.changed.join(', ');
  switch (change.action) {
    case 'none':
      return `job ${job.name} unchanged (version ${job.version})`;
    case 'scale':
      return `job ${job.name} scaled to ${job.replicas} replica(s)`;
    case 'in-place':
      return `job ${job.name} updated to version ${job.version} (${fields} changed): no instance restarts`;
    case 'rollout':
      return `job ${job.name} updated to version ${job.version} (${fields} changed): rolling out`;
  }
}

/** What `plan` says an update would do: `web: version 3 (image changed), rolling out: 3 instance(s) replaced`. */
export function describePlannedUpdate(name: string, update: NonNullable<JobPlan['update']>): string {
  const fields = update.changed.join(', ');
  switch (update.action) {
    case 'none':
      return `${name}: no change`;
    case 'scale':
      return `${name}: scale (replicas changed)`;
    case 'in-place':
      return `${name}: version ${update.version} (${fields} changed), no instance restarts`;
    case 'rollout':
      return `${name}: version ${update.version} (${fields} changed), rolling out: ${update.replaced} instance(s) replaced`;
  }
}
