import type { Instance, Job } from '../../shared/index.js';

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
