import type { Readable } from 'node:stream';
import { DockerFrameDecoder } from './docker-logs.js';
import type { LogPiece, LogSource } from './log-source.js';

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
      while (this.pendingBytes < maxBytes) {
        const chunk = this.response.read() as Buffer | null;
        if (chunk === null) break;
        for (const piece of this.decoder.push(chunk)) {
          if (piece.data.length === 0) continue;
          this.pending.push(piece);
          this.pendingBytes += piece.data.length;
        }
      }
      const piece = this.take(maxBytes);
      if (piece) return piece;
      if (this.ended) {
        if (this.failure) throw this.failure;
        return null;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
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
