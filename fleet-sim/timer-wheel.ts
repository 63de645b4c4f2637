/** How often the wheel turns; every periodic and delayed action of the fleet runs on one of these ticks. */
export const TICK_MS = 50;

interface Delayed {
  due: number;
  run: () => void;
}

/**
 * One `setInterval` for the whole fleet instead of timers per worker. Periodic actions sit in slots of a wheel
 * (one turn = their period), each in a random slot so they spread evenly over the period; one-off actions wait
 * in a min-heap by due time. A late tick catches up on the slots it missed, each once.
 */
export class TimerWheel {
  readonly periodMs: number;
  private readonly slots: Array<Array<(now: number) => void>>;
  private readonly heap: Delayed[] = [];
  private lastTick = Math.floor(Date.now() / TICK_MS);
  private timer: NodeJS.Timeout | undefined;

  constructor(
    periodMs: number,
    private readonly onTick: (now: number) => void = () => {},
    private readonly random = Math.random,
  ) {
    const count = Math.max(1, Math.round(periodMs / TICK_MS));
    this.periodMs = count * TICK_MS;
    this.slots = Array.from({ length: count }, () => []);
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(Date.now()), TICK_MS);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Runs `action` once per period from now on, first at a random point within the first period. */
  every(action: (now: number) => void): void {
    const slot = Math.floor(this.random() * this.slots.length);
    this.slots[slot]!.push(action);
  }

  /** Runs `action` on the first tick at or after `due` (epoch ms). */
  at(due: number, run: () => void): void {
    const heap = this.heap;
    const entry = { due, run };
    heap.push(entry);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (heap[parent]!.due <= due) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = entry;
  }

  /** Delayed actions not run yet. */
  get pending(): number {
    return this.heap.length;
  }

  tick(now: number): void {
    const current = Math.floor(now / TICK_MS);
    // A clock set back must not stop the wheel until it catches up again.
    if (current < this.lastTick) this.lastTick = current - 1;
    const missed = Math.min(current - this.lastTick, this.slots.length);
    for (let step = missed - 1; step >= 0; step--) {
      for (const action of this.slots[(current - step) % this.slots.length]!) action(now);
    }
    this.lastTick = current;
    while (this.heap.length > 0 && this.heap[0]!.due <= now) this.popMin().run();
    this.onTick(now);
  }

  private popMin(): Delayed {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return top;
    let index = 0;
    for (;;) {
      const left = index * 2 + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.due < heap[left]!.due ? right : left;
      if (heap[child]!.due >= last.due) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
    return top;
  }
}
