import { readFileSync } from 'node:fs';
import { uptime } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../shared/atomic-file.js';
import type { Logger, Technology } from '../shared/index.js';
import { monotonicMs } from '../shared/monotonic-clock.js';
import type { Runtime, RuntimeProbe } from './runtimes/runtime.js';

export interface RuntimeHealthOptions {
  runtimes: Runtime[];
  logger: Logger;
  /** How often each runtime is probed (its `probe()`, which has its own timeout). */
  intervalMs?: number;
  /** A runtime came up or went down: what the node announces and reconciles changes. */
  onChange?(technology: Technology, up: boolean): void;
  /** Wall clock: outages are compared with the runtimes' own exit times. */
  wallClock?: () => number;
  /** Monotonic clock: when probes found the runtimes up, and when to save, whatever the wall clock does. */
  clock?: () => number;
  /** When this machine booted (wall clock; default from the uptime): a reboot stops every workload. */
  bootedAt?: number;
  /**
   * Where the last time each runtime was seen up is kept (`runtime-health.json`): a node engine that starts while
   * dockerd is down knows since when its workloads may have been stopped by it.
   */
  dataDir?: string;
}

/**
 * How often the last time a runtime was seen up is written while it stays up (and on every stop). A power cut
 * then counts at most this much before it as the cut's: an exit in that time is started again without counting
 * against its restart policy (it would have been started again anyway; an exit the policy gave up on stays
 * given up, from the restart ledger). Written every minute, it cost an SD card 1,440 synced writes a day.
 */
const SAVE_EVERY_MS = 10 * 60_000;

/** A time the runtime did not answer: from its last good probe to its first good one after (or now). */
interface Outage {
  from: number;
  to: number | undefined;
}

/** Outages remembered per runtime: an exit is decided within seconds of the runtime coming back. */
const OUTAGES_KEPT = 8;

/**
 * Probes every runtime the node is configured for, all the time: dockerd appearing late, restarting or going
 * away is noticed within `intervalMs`, reported through `onChange`, and remembered as an outage, so that a
 * workload the daemon stopped on its way down is told apart from one that exited by itself. A reboot since the
 * runtime was last seen up (kept on disk) is an outage too.
 */
export class RuntimeHealth {
  private readonly up = new Map<Technology, boolean>();
  private readonly lastUp = new Map<Technology, number>();
  /** When (monotonic) the last probe that found each runtime up started. */
  private readonly confirmedAt = new Map<Technology, number>();
  private soon: NodeJS.Timeout | undefined;
  private readonly outages = new Map<Technology, Outage[]>();
  private readonly intervalMs: number;
  private readonly wallClock: () => number;
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;
  private probing: Promise<void> = Promise.resolve();
  private stopped = false;
  /** When (monotonic) runtime-health.json was last written. */
  private savedAt = Number.NEGATIVE_INFINITY;
  private readonly file: string | undefined;

  constructor(private readonly options: RuntimeHealthOptions) {
    this.intervalMs = options.intervalMs ?? 2000;
    this.wallClock = options.wallClock ?? Date.now;
    this.clock = options.clock ?? monotonicMs;
    this.file = options.dataDir === undefined ? undefined : join(options.dataDir, 'runtime-health.json');
    const bootedAt = options.bootedAt ?? this.wallClock() - uptime() * 1000;
    for (const [technology, at] of Object.entries(this.load())) {
      this.lastUp.set(technology as Technology, at);
      // Last seen up before this boot: the machine went down with it (a power cut, a reboot), and whatever
      // stopped since then stopped with it. An outage from then is open until the first good probe.
      if (at < bootedAt) this.outages.set(technology as Technology, [{ from: at, to: undefined }]);
    }
  }

  /** Probes once (so that what is announced at start is known), then every `intervalMs`. */
  async start(): Promise<void> {
    await this.probe();
    this.schedule();
  }

  /** Stops probing; says until when each runtime was up (it still is, as far as this process knows). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.soon);
    await this.probing;
    const now = this.wallClock();
    for (const technology of this.up.keys()) if (this.up.get(technology)) this.lastUp.set(technology, now);
    await this.save();
  }

  /** The runtimes that answered their last probe, in the configured order. */
  available(): Technology[] {
    return this.options.runtimes.flatMap((runtime) =>
      this.up.get(runtime.technology) ? [runtime.technology] : [],
    );
  }

  isUp(technology: Technology): boolean {
    return this.up.get(technology) === true;
  }

  /**
   * Whether a workload of this runtime that finished at `finishedAt` (the runtime's wall-clock time) stopped
   * while its runtime was away: between the last probe that found it and the first that found it again.
   */
  stoppedWithRuntime(technology: Technology, finishedAt: number): boolean {
    return (this.outages.get(technology) ?? []).some(
      (outage) => finishedAt >= outage.from && (outage.to === undefined || finishedAt <= outage.to),
    );
  }

  /**
   * Whether a probe that started at `at` or later (monotonic) found the runtime up. A workload's exit is decided
   * only then: dockerd stops its containers as it goes down, and the exits it causes must be seen as an outage,
   * not taken for the workloads' own.
   */
  confirmedUpAfter(technology: Technology, at: number): boolean {
    return (this.confirmedAt.get(technology) ?? -Infinity) >= at;
  }

  /** Probes once more in `delayMs` (one such probe pending at a time); the regular probes go on. */
  probeSoon(delayMs: number): void {
    if (this.soon || this.stopped) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.probe();
    }, delayMs);
    this.soon.unref?.();
  }

  /** Probes every runtime now (one round at a time). */
  probe(): Promise<void> {
    this.probing = this.probing.then(() => this.probeAll());
    return this.probing;
  }

  private async probeAll(): Promise<void> {
    for (const runtime of this.options.runtimes) {
      const startedAt = this.clock();
      const found = await runtime.probe().catch((): RuntimeProbe => 'unresponsive');
      if (found === 'up') this.confirmedAt.set(runtime.technology, startedAt);
      this.record(runtime.technology, found, this.wallClock());
    }
    if (this.clock() - this.savedAt >= SAVE_EVERY_MS) await this.save();
  }

  private record(technology: Technology, found: RuntimeProbe, now: number): void {
    const was = this.up.get(technology);
    const works = found === 'up';
    this.up.set(technology, works);
    const open = this.outages.get(technology)?.at(-1);
    if (works) {
      this.lastUp.set(technology, now);
      if (open && open.to === undefined) open.to = now;
    } else if (found === 'down' && !(open && open.to === undefined)) {
      // Its daemon is gone: since its last good probe (by this process or, from runtime-health.json, the one
      // before it). An unresponsive daemon is not acted on, but stopped nothing that it knows of.
      const outages = this.outages.get(technology) ?? [];
      outages.push({ from: this.lastUp.get(technology) ?? now, to: undefined });
      this.outages.set(technology, outages.slice(-OUTAGES_KEPT));
    }
    if (was === works) return;
    const { logger, onChange } = this.options;
    if (works) logger.info({ runtime: technology }, 'runtime available');
    else logger.warn({ runtime: technology, found }, 'runtime not available');
    onChange?.(technology, works);
  }

  /** The times each runtime was last seen up, as a previous run left them (none when unreadable). */
  private load(): Record<string, number> {
    if (!this.file) return {};
    try {
      const parsed = JSON.parse(readFileSync(this.file, 'utf8')) as unknown;
      if (typeof parsed !== 'object' || parsed === null) return {};
      return Object.fromEntries(
        Object.entries(parsed).filter((entry): entry is [string, number] => Number.isFinite(entry[1])),
      );
    } catch {
      return {};
    }
  }

  private async save(): Promise<void> {
    this.savedAt = this.clock();
    if (!this.file) return;
    try {
      await writeFileAtomic(this.file, JSON.stringify(Object.fromEntries(this.lastUp)));
    } catch (error) {
      // A full disk: the next save tries again; meanwhile an older time is kept, which errs towards restarting.
      this.options.logger.warn({ err: (error as Error).message }, 'cannot save when runtimes were last up');
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.probe().finally(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref?.();
  }
}
