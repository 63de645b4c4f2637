import { LOG_CREDIT_WINDOW } from '../../shared/index.js';

/**
 * The cluster manager's side of a log stream's flow control. Chunks are numbered from 0, and the node may send
 * those below `upTo`. More credit is granted as chunks arrive, but only while the reader takes what it got: once
 * a write says the reader is full, nothing more is granted until it drained. So at most `window` chunks are ever
 * on their way or waiting here beyond what the reader took, however slow it is. Grants are cumulative (`upTo`,
 * not "n more"): a lost or repeated credit message changes nothing, and the next one repairs it.
 */
export class CreditWindow {
  /** The next chunk number expected. */
  private expected = 0;
  private granted: number;
  private readerFull = false;

  constructor(private readonly window = LOG_CREDIT_WINDOW) {
    this.granted = window;
  }

  /** Chunks numbered below this may be sent. */
  get upTo(): number {
    return this.granted;
  }

  /** How many chunks were accounted for (taken or lost). */
  get received(): number {
    return this.expected;
  }

  /**
   * A chunk arrived: take it (with how many before it never came), or drop it: a repeat, a late one, or one the
   * node had no credit for (a node that sends more than it may is not buffered for).
   */
  arrive(seq: number): { take: true; lost: number } | { take: false } {
    if (seq < this.expected || seq >= this.granted) return { take: false };
    const lost = seq - this.expected;
    this.expected = seq + 1;
    return { take: true, lost };
  }

  /**
   * The chunk taken was passed to the reader, which has room for more (`true`) or is full (`false`). Returns the
   * new `upTo` to send to the node, or undefined when nothing is to be granted now.
   */
  written(readerHasRoom: boolean): number | undefined {
    this.readerFull = !readerHasRoom;
    return this.grant();
  }

  /** The reader took what it held: returns the new `upTo` to send, or undefined. */
  drained(): number | undefined {
    this.readerFull = false;
    return this.grant();
  }

  /** Whether the reader is full: the node gets no more credit now. */
  get waitingForReader(): boolean {
    return this.readerFull;
  }

  /** A full window ahead of what arrived, granted half a window at a time (one message per few chunks). */
  private grant(): number | undefined {
    if (this.readerFull) return undefined;
    const next = this.expected + this.window;
    if (next - this.granted < Math.ceil(this.window / 2)) return undefined;
    this.granted = next;
    return next;
  }
}
