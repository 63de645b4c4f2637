import { monotonicMs } from '../../shared/monotonic-clock.js';
import { withDeadline } from '../deadline.js';

/** A value and whether it is from the latest round (else it is the last one that came in time). */
export interface Sample<T> {
  value: T;
  /** When (monotonic ms: a clock jump makes nothing stale or fresh) the value was read. */
  at: number;
  stale: boolean;
}

/**
 * Reads something slow or fallible (nvidia-smi, a sensor file on a wedged bus) in the background, one read at a
 * time, each with a deadline, so that whoever wants the value never waits: it gets the latest one, marked stale
 * when the read of this round did not come in time. A read that hangs beyond its deadline is given up; no new
 * one starts while it still runs, so a hung driver ties up one read, not one per interval.
 */
export class Sampler<T> {
  private latest: Sample<T>;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly what: string,
    private readonly read: (signal: AbortSignal) => Promise<T>,
    private readonly timeoutMs: number,
    initial: T,
    private readonly onError: (error: Error) => void = () => {},
    private readonly clock: () => number = monotonicMs,
  ) {
    this.latest = { value: initial, at: clock(), stale: true };
  }

  /**
   * Starts a read (unless one is under way), waits for it `waitMs` at most, and gives the latest value: fresh
   * when it was read within `maxAgeMs`. A read that usually takes milliseconds is fresh each round; a wedged
   * one costs the caller `waitMs`, never more.
   */
  async sample(waitMs: number, maxAgeMs: number): Promise<Sample<T>> {
    const reading = this.refresh();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([reading, new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
    const { value, at } = this.latest;
    return { value, at, stale: this.clock() - at > maxAgeMs };
  }

  /** Reads now (unless a read is under way) and resolves when that read ends, in time or not. */
  refresh(): Promise<void> {
    this.reading ??= withDeadline(this.what, this.timeoutMs, this.read)
      .then((value) => {
        this.latest = { value, at: this.clock(), stale: false };
      })
      .catch((error: Error) => this.onError(error))
      .finally(() => {
        this.reading = undefined;
      });
    return this.reading;
  }
}
