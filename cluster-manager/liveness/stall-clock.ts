/**
 * Time as the cluster manager could listen: wall time less every stall of its own event loop. While the loop is
 * blocked (a long synchronous job, a GC pause, the VM paused) no message from any node can be read, so that time
 * must not count as the nodes' silence. A timer ticks every `tickMs`; any gap between two looks at the clock
 * longer than two ticks is a stall, and all of it past one tick is added up.
 */
export class StallClock {
  private stalledMs = 0;
  private last: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly tickMs = 100,
    private readonly wallClock: () => number = Date.now,
  ) {
    this.last = wallClock();
  }

  start(): void {
    this.last = this.wallClock();
    this.timer ??= setInterval(() => this.observe(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Wall time less the stalls seen so far: the clock node silence is measured on. */
  now(): number {
    const wall = this.wallClock();
    this.observe(wall);
    return wall - this.stalledMs;
  }

  /** Milliseconds the event loop was seen stalled since this clock started. */
  get totalStalledMs(): number {
    this.observe(this.wallClock());
    return this.stalledMs;
  }

  private observe(wall = this.wallClock()): void {
    const gap = wall - this.last;
    if (gap > 2 * this.tickMs) this.stalledMs += gap - this.tickMs;
    if (gap > 0) this.last = wall;
  }
}
