/** A call that did not answer within its deadline (a hung daemon, a wedged driver). */
export class DeadlineError extends Error {
  override name = 'DeadlineError';
}

/**
 * Runs `run` with an AbortSignal that fires after `ms`, and rejects with a DeadlineError then even if `run`
 * ignores the signal: whatever hangs, the caller goes on (the reconcile pass, the telemetry tick).
 */
export async function withDeadline<T>(
  what: string,
  ms: number,
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new DeadlineError(`${what} did not answer within ${formatSeconds(ms)}`);
      controller.abort(error);
      reject(error);
    }, ms);
  });
  try {
    return await Promise.race([run(controller.signal), expired]);
  } finally {
    clearTimeout(timer);
  }
}

function formatSeconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}
