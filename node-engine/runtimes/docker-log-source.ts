import type { Readable } from 'node:stream';
import { monotonicMs } from '../../shared/index.js';
import { DockerFrameDecoder } from './docker-logs.js';
import type { LogPiece, LogSource } from './log-source.js';

/** How long a read waits at most for more of a container's output to send with what came. */
const GATHER_MS = 5;

/**
 * A container's output from Docker's logs endpoint, pulled. The HTTP response is read only as far as `read`
 * asks (the stream is paused: once its buffer is full the socket is not read, and dockerd's writes wait), so a
 * reader that stops asking holds at most the stream's buffer and one read's worth here.
 */
export class DockerLogSource implements LogSource {
  private readonly decoder = new DockerFrameDecoder();
  /** Decoded output not handed out yet: less than one `read`'s worth plus one chunk of the response. */
  private readonly pending: LogPiece[] = [];
  private pendingBytes = 0;
  private ended = false;
  private closed = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly response: Readable) {
    response.on('readable', () => this.notify());
    response.on('end', () => this.finish());
    response.on('close', () => this.finish());
    response.on('error', (error) => {
      if (!this.closed) this.failure ??= error;
      this.finish();
    });
  }

  async read(maxBytes: number): Promise<LogPiece | null> {
    for (;;) {
      if (this.closed) return null;
      this.drain(maxBytes);
      // Docker sends a frame per line: what arrives within a few milliseconds goes out as one piece (one message,
      // not one per line).
      if (this.pendingBytes > 0 && this.pendingBytes < maxBytes) {
        const until = monotonicMs() + GATHER_MS;
        while (this.pendingBytes < maxBytes && !this.ended && !this.closed && monotonicMs() < until) {
          await this.more(until - monotonicMs());
          this.drain(maxBytes);
        }
      }
      const piece = this.take(maxBytes);
      if (piece) return piece;
      if (this.ended) {
        if (this.failure) throw this.failure;
        return null;
      }
      await this.more();
    }
  }

  /** Waits until something happens to the response (more output, its end), or `ms` passed. */
  private more(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Moves what the response has buffered into `pending`, up to `maxBytes`. */
  private drain(maxBytes: number): void {
    while (this.pendingBytes < maxBytes) {
      const chunk = this.response.read() as Buffer | null;
      if (chunk === null) break;
      for (const piece of this.decoder.push(chunk)) {
        if (piece.data.length === 0) continue;
        this.pending.push(piece);
        this.pendingBytes += piece.data.length;
      }
    }
  }

  close(): void {
    this.closed = true;
    this.response.destroy();
    this.notify();
  }

  /** Consecutive pending pieces of the first one's stream, up to `maxBytes` (the last one split if need be). */
  private take(maxBytes: number): LogPiece | null {
    const first = this.pending[0];
    if (!first) return null;
    const parts: Buffer[] = [];
    let size = 0;
    while (size < maxBytes) {
      const next = this.pending[0];
      if (!next || next.stream !== first.stream) break;
      const room = maxBytes - size;
      if (next.data.length <= room) {
        parts.push(next.data);
        size += next.data.length;
        this.pending.shift();
      } else {
        parts.push(next.data.subarray(0, room));
        size += room;
        this.pending[0] = { stream: next.stream, data: next.data.subarray(room) };
      }
    }
    this.pendingBytes -= size;
    return { stream: first.stream, data: parts.length === 1 ? parts[0]! : Buffer.concat(parts) };
  }

  private finish(): void {
    this.ended = true;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
