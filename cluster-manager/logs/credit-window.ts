import { LOG_CREDIT_BYTES } from '../../shared/index.js';

/**
 * The cluster manager's side of a log stream's flow control, in bytes of output. The node may send chunks while
 * what it sent is below `upTo`. More credit is granted as chunks arrive, but only while the reader takes what it
 * got: once a write says the reader is full, nothing more is granted until it drained. So at most `window` bytes
 * (and the one chunk that crosses it) are ever on their way or waiting here beyond what the reader took, however
 * slow it is. Grants are cumulative (`upTo`, not "n more"): a lost or repeated credit message changes nothing,
 * and the next one repairs it. Chunks carry their offset, so one lost on the way is counted, not waited for.
 */
export class CreditWindow {
  /** The offset of the next chunk expected: every byte before it arrived or was lost. */
  private expected = 0;
  private granted: number;
  private readerFull = false;

  constructor(private readonly window = LOG_CREDIT_BYTES) {
    this.granted = window;
  }

  /** The node may send while the bytes it sent are below this. */
  get upTo(): number {
    return this.granted;
  }

  /** The bytes accounted for (arrived or lost). */
  get received(): number {
    return this.expected;
  }

  /**
   * A chunk of `bytes` at `offset` arrived: take it (with how many bytes before it never came), or drop it: a
   * repeat, a late one, or one the node had no credit for (a node that sends more than it may is not buffered
   * for).
   */
  arrive(offset: number, bytes: number): { take: true; lost: number } | { take: false } {
    if (offset < this.expected || offset >= this.granted) return { take: false };
    const lost = offset - this.expected;
    this.expected = offset + bytes;
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
    if (next - this.granted < this.window / 2) return undefined;
    this.granted = next;
    return next;
  }
}
