import { doublingDelay, type Restart } from '../shared/index.js';

export const RESTART_BASE_DELAY_MS = 1000;
export const RESTART_MAX_DELAY_MS = 5 * 60_000;
/** A workload that ran this long before exiting starts its backoff afresh (kubelet does the same). */
export const RESTART_BACKOFF_RESET_MS = 10 * 60_000;

export type ExitDecision =
  | { action: 'restart'; delayMs: number }
  | { action: 'give-up'; status: 'failed' | 'stopped'; reason: string };

/** 1 s, 2 s, 4 s ... up to 5 min between restarts of a workload that keeps exiting. */
export function restartDelayMs(consecutiveFailures: number): number {
  return doublingDelay(consecutiveFailures, RESTART_BASE_DELAY_MS, RESTART_MAX_DELAY_MS);
}

/** What to do with a workload that exited, by the job's restart policy and the restarts it had so far. */
export function decideAfterExit(
  restart: Restart,
  exitCode: number | undefined,
  restarts: number,
  consecutiveFailures: number,
): ExitDecision {
  const code = exitCode ?? -1;
  const exited = exitCode === undefined ? 'exited' : `exited with code ${exitCode}`;
  if (restart.policy === 'never') {
    return code === 0
      ? { action: 'give-up', status: 'stopped', reason: `${exited}; restart policy never` }
      : { action: 'give-up', status: 'failed', reason: `${exited}; restart policy never` };
  }
  if (restart.policy === 'on-failure') {
    if (code === 0)
      return { action: 'give-up', status: 'stopped', reason: `${exited}; completed (on-failure)` };
    if (restarts >= restart.maxRetries) {
      return {
        action: 'give-up',
        status: 'failed',
        reason: `${exited}; gave up after ${restarts} restarts (maxRetries ${restart.maxRetries})`,
      };
    }
  }
  return { action: 'restart', delayMs: restartDelayMs(consecutiveFailures) };
}
