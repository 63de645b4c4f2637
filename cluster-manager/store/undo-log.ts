/** A collection with indexes: `put` adds a value to all of them, `drop` takes it out of all of them. */
export interface Indexed<V> {
  put(value: V): void;
  drop(value: V): void;
}

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

  /**
   * Puts `next` where `previous` was in an indexed collection (`index` keeps its maps; either may be undefined:
   * an insert, a removal) and records how to take that back. Undos run newest first, so `next` is what stands
   * there when its undo runs. `changed` is called now and again if the change is taken back, so that whoever
   * follows the store (a change feed) hears of both.
   */
  swap<V>(previous: V | undefined, next: V | undefined, index: Indexed<V>, changed?: () => void): void {
    if (previous !== undefined) index.drop(previous);
    if (next !== undefined) index.put(next);
    changed?.();
    this.record(() => {
      if (next !== undefined) index.drop(next);
      if (previous !== undefined) index.put(previous);
      changed?.();
    });
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
