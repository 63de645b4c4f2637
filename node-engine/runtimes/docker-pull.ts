import type Dockerode from 'dockerode';

interface PullEvent {
  status?: string;
  progress?: string;
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/** Logs at most one progress line per layer and status every this many ms: pulls print thousands of events. */
const PROGRESS_LOG_EVERY_MS = 2000;

/**
 * Pulls an image, reporting progress lines, and fails with Docker's own reason (an unreachable registry
 * answers at once) or after `timeoutMs` rather than hanging.
 */
export async function pullImage(
  docker: Dockerode,
  image: string,
  timeoutMs: number,
  onProgress: (line: string) => void,
): Promise<void> {
  const stream = await docker.pull(image);
  let lastLog = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      (stream as unknown as { destroy(): void }).destroy();
      reject(new Error(`pull did not finish within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    docker.modem.followProgress(
      stream,
      (error: Error | null, events: PullEvent[]) => {
        clearTimeout(timer);
        const failed = events?.find((event) => event.error || event.errorDetail);
        if (error) reject(error);
        else if (failed) reject(new Error(failed.errorDetail?.message ?? failed.error ?? 'pull failed'));
        else resolve();
      },
      (event: PullEvent) => {
        const now = Date.now();
        if (now - lastLog < PROGRESS_LOG_EVERY_MS && !event.error) return;
        lastLog = now;
        onProgress([event.id, event.status, event.progress, event.error].filter(Boolean).join(' '));
      },
    );
  });
}
