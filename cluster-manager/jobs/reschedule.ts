import { DEFAULT_RESCHEDULE, type JobSpec } from '../../shared/index.js';

type ReschedulePolicy = JobSpec['reschedule'];

/** The job's policy; jobs stored before the policy existed get the default. */
export function reschedulePolicy(spec: JobSpec): ReschedulePolicy {
  return spec.reschedule ?? DEFAULT_RESCHEDULE;
}

/**
 * When a failed instance may be placed again, given when it failed and when it was rescheduled before (its
 * history): undefined when the policy's attempts within its interval are used up. The delay doubles with each
 * attempt in the interval, up to maxDelayMs.
 */
export function nextRescheduleAt(
  policy: ReschedulePolicy,
  failedAt: number,
  history: readonly number[],
  now: number,
): number | undefined {
  const recent = history.filter((at) => now - at < policy.intervalMs).length;
  if (recent >= policy.attempts) return undefined;
  const delay = Math.min(policy.maxDelayMs, policy.delayMs * 2 ** recent);
  return failedAt + delay;
}
