import type Dockerode from 'dockerode';
import { monotonicMs } from '../../shared/monotonic-clock.js';
import { withDeadline } from '../deadline.js';
import type { PullMeasure } from './runtime.js';

interface PullEvent {
  status?: string;
  progress?: string;
  progressDetail?: { current?: number; total?: number };
  id?: string;
  error?: string;
  errorDetail?: { message?: string };
}

/** Progress is said at most this often: a pull prints thousands of events. */
const PROGRESS_EVERY_MS = 2000;

/** Bytes of each layer, as the pull's events count them: downloads, then extraction. */
export class PullProgress {
  private readonly layers = new Map<
    string,
    { current: number; total: number; done: boolean; status: string }
  >();

  /** Takes one event; returns whether the pull moved (more bytes, or a layer on to its next step). */
  take(event: PullEvent): boolean {
    const id = event.id;
    if (!id) return false;
    const layer = this.layers.get(id) ?? { current: 0, total: 0, done: false, status: '' };
    this.layers.set(id, layer);
    const status = event.status ?? '';
    const before = layer.current;
    const stepped = status !== layer.status;
    layer.status = status;
    const detail = event.progressDetail;
    if (status === 'Downloading' && detail?.total) {
      layer.total = detail.total;
      layer.current = Math.max(layer.current, detail.current ?? 0);
    } else if (/^(Download complete|Pull complete|Already exists)/.test(status)) {
      layer.current = layer.total;
      layer.done = true;
    }
    return stepped || layer.current > before || (status === 'Extracting' && detail?.current !== undefined);
  }

  /** How far the pull is, over the layers whose size is known; undefined before any is. */
  measure(): PullMeasure | undefined {
    let total = 0;
    let current = 0;
    for (const layer of this.layers.values()) {
      total += layer.total;
      current += layer.done ? layer.total : layer.current;
    }
    if (total === 0) return undefined;
    return { percent: Math.min(100, Math.floor((current / total) * 100)), totalBytes: total };
  }

  /** "pulling 43% of 120 MB", or "pulling" before any size is known. */
  describe(): string {
    const measure = this.measure();
    return measure ? `pulling ${measure.percent}% of ${formatBytes(measure.totalBytes)}` : 'pulling';
  }
}

function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${Math.round(bytes / 1e6)} MB`;
  return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

/**
 * Pulls an image and fails with Docker's own reason (an unreachable registry answers at once), or when the pull
 * makes no progress for `stallMs`: a slow but healthy pull over a poor link goes on as long as it moves. The
 * request itself has `stallMs` to be answered. `onProgress` hears "pulling 43% of 120 MB" every few seconds.
 */
export async function pullImage(
  docker: Dockerode,
  image: string,
  stallMs: number,
  onProgress: (line: string, measure: PullMeasure | undefined) => void,
): Promise<void> {
  const stream = (await withDeadline(`docker pull ${image}`, stallMs, (abortSignal) =>
    docker.pull(image, { abortSignal }),
  )) as NodeJS.ReadableStream & { destroy(): void };
  const progress = new PullProgress();
  let said = Number.NEGATIVE_INFINITY;
  await new Promise<void>((resolve, reject) => {
    let stall: NodeJS.Timeout | undefined;
    const watch = () => {
      clearTimeout(stall);
      stall = setTimeout(() => {
        stream.destroy();
        reject(new Error(`pull made no progress for ${Math.round(stallMs / 1000)} s`));
      }, stallMs);
    };
    watch();
    docker.modem.followProgress(
      stream,
      (error: Error | null, events: PullEvent[]) => {
        clearTimeout(stall);
        const failed = events?.find((event) => event.error || event.errorDetail);
        if (error) reject(error);
        else if (failed) reject(new Error(failed.errorDetail?.message ?? failed.error ?? 'pull failed'));
        else resolve();
      },
      (event: PullEvent) => {
        if (progress.take(event)) watch();
        const now = monotonicMs();
        if (now - said < PROGRESS_EVERY_MS) return;
        said = now;
        onProgress(progress.describe(), progress.measure());
      },
    );
  });
}
