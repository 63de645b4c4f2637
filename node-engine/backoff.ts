import { doublingDelay } from '../shared/backoff.js';
import { monotonicMs } from '../shared/monotonic-clock.js';

/** The delay after `failures` failures in a row: none before the first, then the project's doubling. */
function delayAfter(failures: number, baseMs: number, maxMs: number): number {
  return failures <= 0 ? 0 : doublingDelay(failures - 1, baseMs, maxMs);
}

/** A delay as people read it in a detail: "800ms", "40s", "5m", "2m30s". */
export function formatDelay(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const rest = seconds % 60;
  return `${Math.floor(seconds / 60)}m${rest === 0 ? '' : `${rest}s`}`;
}

export interface BackOffOptions {
  baseMs: number;
  maxMs: number;
  /** A key that has not failed for this long starts again at `baseMs` (default: twice `maxMs`). */
  forgetAfterMs?: number;
  now?: () => number;
}

interface Entry {
  failures: number;
  lastFailure: number;
  readyAt: number;
}

/**
 * One back-off per key, as the kubelet keeps one per image pull and per container: each failure doubles the
 * key's delay from `baseMs` up to `maxMs`; success (`reset`) or a long quiet spell forgets it. Nothing is ever
 * given up: the caller tries again once `ready` says so.
 */
export class BackOff {
  private readonly entries = new Map<string, Entry>();
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly forgetAfterMs: number;
  private readonly now: () => number;

  constructor(options: BackOffOptions) {
    this.baseMs = options.baseMs;
    this.maxMs = options.maxMs;
    this.forgetAfterMs = options.forgetAfterMs ?? 2 * options.maxMs;
    this.now = options.now ?? monotonicMs;
  }

  /**
   * Counts a failure of `key`; returns how long to wait before the next try, the failures in a row, and whether
   * this is the first failure whose delay reached the cap (worth saying once: it is how often it goes on).
   */
  fail(key: string): { delayMs: number; failures: number; firstAtCap: boolean } {
    const now = this.now();
    const previous = this.entries.get(key);
    const quiet = previous === undefined || now - previous.lastFailure >= this.forgetAfterMs;
    const failures = quiet ? 1 : previous.failures + 1;
    const delayMs = delayAfter(failures, this.baseMs, this.maxMs);
    this.entries.set(key, { failures, lastFailure: now, readyAt: now + delayMs });
    const firstAtCap =
      delayMs >= this.maxMs && delayAfter(failures - 1, this.baseMs, this.maxMs) < this.maxMs;
    return { delayMs, failures, firstAtCap };
  }

  /** Whether `key` may be tried now (it never failed, or its delay is over). */
  ready(key: string): boolean {
    const entry = this.entries.get(key);
    return entry === undefined || this.now() >= entry.readyAt;
  }

  /** Milliseconds until `key` may be tried again; 0 when it may now. */
  remainingMs(key: string): number {
    const entry = this.entries.get(key);
    return entry === undefined ? 0 : Math.max(0, entry.readyAt - this.now());
  }

  failures(key: string): number {
    return this.entries.get(key)?.failures ?? 0;
  }

  /** It worked: the next failure starts at `baseMs` again. */
  reset(key: string): void {
    this.entries.delete(key);
  }

  /** Drops keys for which `keep` is false (instances no longer desired). */
  retain(keep: (key: string) => boolean): void {
    for (const key of this.entries.keys()) if (!keep(key)) this.entries.delete(key);
  }
}
