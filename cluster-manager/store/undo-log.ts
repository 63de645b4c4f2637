/**
 * What the in-memory side of the stores changed inside a SQLite transaction, so that a rollback restores it too.
 * Stores write SQLite first and their maps after; each map change inside a transaction records how to take it
 * back. `Store.transaction` opens a frame per (nested) transaction: a commit hands the frame's entries to the
 * enclosing one, a rollback runs them newest first. Outside a transaction nothing is recorded: a statement that
 * fails throws before the maps are touched.
 */
export class UndoLog {
  private readonly frames: (() => void)[][] = [];

  /** Notes how to take back a change just made to memory (nothing to note outside a transaction). */
  record(undo: () => void): void {
    this.frames.at(-1)?.push(undo);
  }

  /** Runs `transaction` (the SQLite one) in a frame: kept if it returns, taken back if it throws. */
  within<T>(transaction: () => T): T {
    const frame: (() => void)[] = [];
    this.frames.push(frame);
    try {
      const result = transaction();
      this.frames.pop();
      const enclosing = this.frames.at(-1);
      if (enclosing) for (const undo of frame) enclosing.push(undo);
      return result;
    } catch (error) {
      this.frames.pop();
      for (let i = frame.length - 1; i >= 0; i--) frame[i]?.();
      throw error;
    }
  }
}
