import {
  describeProblems,
  LogControlSchema,
  type Logger,
  type LogStreamMessage,
  MAX_LOG_STREAMS_PER_NODE,
  parseJson,
} from '../../shared/index.js';
import type { Runtime } from '../runtimes/runtime.js';
import { ServedLogStream } from './served-log-stream.js';

export interface LogStreamsOptions {
  runtimes: Runtime[];
  /** Sends a message on `nodes/<id>/logs/stream`; false when the link is down. */
  publish: (message: LogStreamMessage) => boolean;
  logger: Logger;
  maxStreams?: number;
  leaseMs?: number;
}

/**
 * The log streams this node serves, driven by what the cluster manager sends on `nodes/<id>/logs/control`: each
 * message is parsed with its schema (a bad one is logged and dropped), at most `maxStreams` run at once (one more
 * is refused with `too_many_streams`), and credit for a stream this node does not have is answered with an `end`
 * (`unknown_stream`: the node engine restarted), so that its reader is not left waiting.
 */
export class LogStreams {
  private readonly streams = new Map<string, ServedLogStream>();
  /** Output bytes read for streams since the start, for `/metrics`. */
  bytesRead = 0;

  constructor(private readonly options: LogStreamsOptions) {}

  handle(payload: Buffer): void {
    const json = parseJson(payload);
    const parsed = json === undefined ? undefined : LogControlSchema.safeParse(json);
    if (!parsed?.success) {
      this.options.logger.warn(
        { reason: parsed ? describeProblems(parsed.error) : 'not JSON' },
        'dropped a malformed log control message',
      );
      return;
    }
    const message = parsed.data;
    const stream = this.streams.get(message.requestId);
    switch (message.type) {
      case 'open': {
        if (stream) return;
        if (this.streams.size >= (this.options.maxStreams ?? MAX_LOG_STREAMS_PER_NODE)) {
          this.refuse(message.requestId, {
            code: 'too_many_streams',
            message: `this node serves ${this.streams.size} log streams already, its most at once`,
          });
          return;
        }
        const served = new ServedLogStream(message, {
          runtimes: this.options.runtimes,
          publish: this.options.publish,
          onRead: (bytes) => {
            this.bytesRead += bytes;
          },
          onEnd: () => this.streams.delete(message.requestId),
          logger: this.options.logger,
          ...(this.options.leaseMs !== undefined ? { leaseMs: this.options.leaseMs } : {}),
        });
        this.streams.set(message.requestId, served);
        void served.run();
        return;
      }
      case 'credit':
        if (stream) stream.grant(message.upTo);
        else
          this.refuse(message.requestId, {
            code: 'unknown_stream',
            message: 'this node has no such log stream (it ended, or the node engine restarted)',
          });
        return;
      case 'cancel':
        stream?.cancel();
        return;
    }
  }

  /** Streams open now. */
  get open(): number {
    return this.streams.size;
  }

  /** Streams that sent all their credit allows and wait for more: their readers are slower than the output. */
  get waitingForCredit(): number {
    let waiting = 0;
    for (const stream of this.streams.values()) if (stream.waitingForCredit) waiting++;
    return waiting;
  }

  /** Ends every stream (the node engine stops, or its node id changed). */
  closeAll(): void {
    for (const stream of [...this.streams.values()]) stream.cancel();
  }

  private refuse(requestId: string, error: { code: string; message: string }): void {
    this.options.publish({ type: 'end', requestId, offset: 0, reason: 'error', error });
  }
}
