/**
 * Gathers ids for `windowMs`, then hands them over once each: a job written twenty times in a burst, or a node
 * heard every second, gives one notice per window, at most one per id per window.
 */
export class NoticeWindow {
  private readonly ids = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly windowMs: number,
    private readonly flush: (ids: ReadonlySet<string>) => void,
  ) {}

  add(id: string): void {
    this.ids.add(id);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const ids = new Set(this.ids);
      this.ids.clear();
      this.flush(ids);
    }, this.windowMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.ids.clear();
  }
}
