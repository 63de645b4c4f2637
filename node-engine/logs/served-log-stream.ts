import { StringDecoder } from 'node:string_decoder';
import {
  LOG_CHUNK_BYTES,
  LOG_LEASE_MS,
  type LogControl,
  type LogEndReason,
  type Logger,
  type LogStreamMessage,
  type LogStreamName,
  sinceTime,
} from '../../shared/index.js';
import type { LogSource } from '../runtimes/log-source.js';
import { type Runtime, RuntimeError } from '../runtimes/runtime.js';
import { findInstanceWorkload } from './instance-workload.js';

export type LogOpenRequest = Extract<LogControl, { type: 'open' }>;

/** How a stream reached its end, said in its `end` message. */
interface Ending {
  reason: LogEndReason;
  error?: { code: string; message: string };
}

/**
 * One log stream a cluster manager asked this node for: the instance's output read from its runtime only while
 * credit allows (bytes sent below `upTo`, and no read larger than the credit left), so a reader that does not
 * keep up stops the reading here, and the output waits where the workload wrote it (Docker's log file, the
 * native output file). It ends at the end of the output, on cancel, when its lease runs out (no credit for
 * LOG_LEASE_MS: the reader or its cluster manager is gone), or on an error.
 */
export class ServedLogStream {
  readonly requestId: string;
  /** Bytes of output sent so far (the next chunk's offset). */
  private sent = 0;
  private upTo: number;
  private ending: Ending | undefined;
  private source: LogSource | undefined;
  private lease: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private readonly decoders: Record<LogStreamName, StringDecoder> = {
    stdout: new StringDecoder('utf8'),
    stderr: new StringDecoder('utf8'),
  };
  /** Whether it waits for credit (everything allowed was sent): what a slow reader looks like here. */
  waitingForCredit = false;

  constructor(
    private readonly request: LogOpenRequest,
    private readonly deps: {
      runtimes: Runtime[];
      /** Sends a message; false when it could not go out (the link is down). */
      publish: (message: LogStreamMessage) => boolean;
      /** Output bytes read from the workload, for the metrics. */
      onRead: (bytes: number) => void;
      onEnd: () => void;
      logger: Logger;
      leaseMs?: number;
    },
  ) {
    this.requestId = request.requestId;
    this.upTo = request.upTo;
    this.renewLease();
  }

  /** Reads and sends until the end; never throws. */
  async run(): Promise<void> {
    try {
      const opened = await this.openSource();
      if (!opened) return;
      this.source = opened.source;
      if (this.ending) {
        opened.source.close();
        return;
      }
      this.deps.publish({ type: 'opened', requestId: this.requestId, technology: opened.technology });
      await this.pump(opened.source);
    } catch (error) {
      if (!this.ending) {
        this.deps.logger.warn(
          { requestId: this.requestId, err: (error as Error).message },
          'log stream failed',
        );
        this.end({ reason: 'error', error: { code: 'runtime_error', message: (error as Error).message } });
      }
    }
  }

  /** More credit (a cumulative `upTo`: a lost or repeated grant changes nothing); it renews the lease too. */
  grant(upTo: number): void {
    if (this.ending) return;
    this.renewLease();
    if (upTo > this.upTo) {
      this.upTo = upTo;
      this.notify();
    }
  }

  cancel(): void {
    this.end({ reason: 'cancelled' });
  }

  /** Ends the stream (once) and says so; what it held is let go. */
  end(ending: Ending): void {
    if (this.ending) return;
    this.ending = ending;
    clearTimeout(this.lease);
    this.source?.close();
    this.notify();
    this.deps.publish({
      type: 'end',
      requestId: this.requestId,
      offset: this.sent,
      reason: ending.reason,
      ...(ending.error ? { error: ending.error } : {}),
    });
    this.deps.onEnd();
  }

  private async pump(source: LogSource): Promise<void> {
    for (;;) {
      while (!this.ending && this.sent >= this.upTo) {
        this.waitingForCredit = true;
        await this.nextWake();
      }
      this.waitingForCredit = false;
      if (this.ending) return;
      const piece = await source.read(Math.min(LOG_CHUNK_BYTES, this.upTo - this.sent));
      if (this.ending) return;
      if (!piece) {
        this.end({ reason: 'eof' });
        return;
      }
      this.deps.onRead(piece.data.length);
      // A character split between two reads is sent whole with the second.
      const data = this.decoders[piece.stream].write(piece.data);
      if (data === '') continue;
      const chunk: LogStreamMessage = {
        type: 'chunk',
        requestId: this.requestId,
        offset: this.sent,
        stream: piece.stream,
        data,
      };
      // Not connected: the chunk waits (one chunk) until credit or the lease's end says the link is back or over.
      while (!this.deps.publish(chunk)) {
        if (this.ending) return;
        await this.nextWake();
      }
      this.sent += Buffer.byteLength(data);
    }
  }

  /** The instance's workload here (the generation asked for, else the newest) and its output, or an `end`. */
  private async openSource(): Promise<{ source: LogSource; technology: Runtime['technology'] } | undefined> {
    const { request } = this;
    const { found, failures } = await findInstanceWorkload(this.deps.runtimes, request);
    if (!found) {
      const where = `no workload of job ${request.job} instance ${request.instance} on this node`;
      this.end({
        reason: 'error',
        error:
          failures.length > 0
            ? { code: 'runtime_error', message: `${where} (${failures.join('; ')})` }
            : { code: 'not_found', message: where },
      });
      return undefined;
    }
    try {
      const source = await found.runtime.openLogs(found.workload.handle, {
        follow: request.follow,
        streams: request.streams,
        ...(request.tail !== undefined ? { tail: request.tail } : {}),
        ...(request.since !== undefined ? { since: sinceTime(request.since, Date.now()) } : {}),
      });
      return { source, technology: found.runtime.technology };
    } catch (error) {
      if (error instanceof RuntimeError && error.code === 'not_found') {
        this.end({ reason: 'error', error: { code: 'not_found', message: error.message } });
        return undefined;
      }
      throw error;
    }
  }

  private renewLease(): void {
    clearTimeout(this.lease);
    this.lease = setTimeout(() => this.end({ reason: 'lease' }), this.deps.leaseMs ?? LOG_LEASE_MS);
    this.lease.unref();
  }

  private nextWake(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
