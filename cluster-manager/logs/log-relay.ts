import { randomUUID } from 'node:crypto';
import {
  LOG_KEEPALIVE_MS,
  type LogControlInput,
  type Logger,
  type LogSince,
  type LogStreamChoice,
  type LogStreamMessage,
  type MqttClient,
  topics,
} from '../../shared/index.js';
import { ClientError } from '../errors.js';
import { CreditWindow } from './credit-window.js';

/** How long a node has to open the output asked for before the reader gets 504. */
const OPEN_TIMEOUT_MS = 10_000;
/** Streams the cluster manager relays at once; one more is refused with 503 (as a stream beyond `--max-streams`). */
const MAX_STREAMS = 256;

/** What a reader asks for: an instance's output on the node it is placed on. */
export interface LogRequest {
  nodeId: string;
  /** The node's name, for messages. */
  nodeName: string;
  jobId: string;
  instance: number;
  generation: number;
  follow: boolean;
  tail?: number;
  since?: LogSince;
  streams: LogStreamChoice;
}

/** Where a stream's output goes (the HTTP response). */
export interface LogSink {
  /** Passes output on; false when the reader is full (`RelayedLogStream.drained` once it took it). */
  write(text: string): boolean;
  /** The end: all output passed on, or (`broken`) why it broke off. */
  end(broken?: string): void;
}

/**
 * One stream relayed from a node to a reader. `opened` resolves once the node opened the output, or rejects with
 * the ClientError to answer (404, 409, 502, 503, 504). Output that comes before a sink is attached (at most
 * the credit window's) waits here.
 */
export class RelayedLogStream {
  readonly requestId = randomUUID();
  readonly credit = new CreditWindow();
  readonly opened: Promise<void>;
  state: 'opening' | 'open' | 'ended' = 'opening';
  private sink: LogSink | undefined;
  private readonly early: string[] = [];
  private earlyEnd: { broken?: string } | undefined;
  private settle!: { resolve: () => void; reject: (error: ClientError) => void };
  private openTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly request: LogRequest,
    private readonly relay: LogRelay,
  ) {
    this.opened = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // The caller may never await it (the reader left first): no unhandled rejection.
    this.opened.catch(() => undefined);
    this.openTimer = setTimeout(
      () =>
        this.fail(
          new ClientError(
            504,
            'node_timeout',
            `node ${request.nodeName} did not answer the log request within ${OPEN_TIMEOUT_MS / 1000} s`,
          ),
        ),
      OPEN_TIMEOUT_MS,
    );
  }

  /** Output goes to `sink` from now on (what came before first). */
  attach(sink: LogSink): void {
    this.sink = sink;
    for (const text of this.early.splice(0)) this.write(text);
    if (this.earlyEnd) sink.end(this.earlyEnd.broken);
  }

  /** The reader took what it held: more credit. */
  drained(): void {
    if (this.state !== 'open') return;
    const upTo = this.credit.drained();
    if (upTo !== undefined) this.relay.grant(this, upTo);
  }

  /** The reader went away: the node stops. */
  cancel(): void {
    if (this.state === 'ended') return;
    if (this.state === 'opening') this.settle.reject(new ClientError(409, 'cancelled', 'the reader left'));
    this.close();
    this.relay.cancelAtNode(this);
  }

  /** Before the output opened: answer the reader with `error`. */
  fail(error: ClientError): void {
    if (this.state !== 'opening') return;
    this.settle.reject(error);
    this.close();
    this.relay.cancelAtNode(this);
  }

  /** After it opened: the output broke off (the node went offline, the cluster manager stops...). */
  breakOff(why: string): void {
    if (this.state !== 'open') return;
    this.close();
    this.finish(why);
    this.relay.cancelAtNode(this);
  }

  /** A message of the node about this stream. */
  onMessage(message: LogStreamMessage): void {
    switch (message.type) {
      case 'opened':
        if (this.state !== 'opening') return;
        this.state = 'open';
        clearTimeout(this.openTimer);
        this.settle.resolve();
        return;
      case 'chunk': {
        if (this.state !== 'open') return;
        const arrival = this.credit.arrive(message.offset, Buffer.byteLength(message.data));
        if (!arrival.take) return;
        if (arrival.lost > 0) this.write(lostLine(arrival.lost));
        const upTo = this.credit.written(this.write(message.data));
        if (upTo !== undefined) this.relay.grant(this, upTo);
        return;
      }
      case 'end':
        if (this.state === 'opening') {
          this.fail(refusal(message, this.request));
          return;
        }
        if (this.state !== 'open') return;
        if (message.offset > this.credit.received)
          this.write(lostLine(message.offset - this.credit.received));
        this.close();
        this.finish(brokenBy(message, this.request));
        return;
    }
  }

  private write(text: string): boolean {
    if (this.sink) return this.sink.write(text);
    this.early.push(text);
    return true;
  }

  private finish(broken: string | undefined): void {
    const ending = broken === undefined ? {} : { broken };
    if (this.sink) this.sink.end(ending.broken);
    else this.earlyEnd = ending;
  }

  private close(): void {
    this.state = 'ended';
    clearTimeout(this.openTimer);
    this.relay.forget(this);
  }
}

/**
 * Relays instance output from nodes to HTTP readers: opens a stream on the node's `logs/control` topic, passes
 * what arrives on `logs/stream` to the reader, grants credit as the reader takes it, renews every stream's lease
 * every LOG_KEEPALIVE_MS (its credit again, so a node whose cluster manager vanished stops within LOG_LEASE_MS),
 * and ends the streams of a node that goes offline.
 */
export class LogRelay {
  private readonly streams = new Map<string, RelayedLogStream>();
  private mqtt: MqttClient | undefined;
  private keepalive: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger) {}

  attach(mqtt: MqttClient): void {
    this.mqtt = mqtt;
    this.keepalive = setInterval(() => {
      for (const stream of this.streams.values())
        if (stream.state === 'open') this.grant(stream, stream.credit.upTo);
    }, LOG_KEEPALIVE_MS);
    this.keepalive.unref();
  }

  /** Streams relayed now. */
  get count(): number {
    return this.streams.size;
  }

  /** Asks the node for the output; throws 503 when the cluster manager relays its most already. */
  open(request: LogRequest): RelayedLogStream {
    if (this.streams.size >= MAX_STREAMS)
      throw new ClientError(
        503,
        'too_many_streams',
        `the cluster manager relays ${this.streams.size} log streams already, its most at once`,
      );
    const stream = new RelayedLogStream(request, this);
    this.streams.set(stream.requestId, stream);
    this.send(request.nodeId, {
      type: 'open',
      requestId: stream.requestId,
      job: request.jobId,
      instance: request.instance,
      generation: request.generation,
      follow: request.follow,
      ...(request.tail !== undefined ? { tail: request.tail } : {}),
      ...(request.since !== undefined ? { since: request.since } : {}),
      streams: request.streams,
      upTo: stream.credit.upTo,
    });
    return stream;
  }

  /** A message on `nodes/<id>/logs/stream`, parsed. Late ones of streams that ended are dropped quietly. */
  onMessage(nodeId: string, message: LogStreamMessage): void {
    const stream = this.streams.get(message.requestId);
    if (!stream) return;
    if (stream.request.nodeId !== nodeId) {
      this.logger.warn(
        { nodeId, requestId: message.requestId },
        "a node sent output for another node's stream",
      );
      return;
    }
    stream.onMessage(message);
  }

  /** The node went offline: its streams end, and their readers are told why. */
  nodeOffline(nodeId: string): void {
    for (const stream of [...this.streams.values()]) {
      if (stream.request.nodeId !== nodeId) continue;
      const why = `node ${stream.request.nodeName} went offline`;
      if (stream.state === 'opening') stream.fail(new ClientError(409, 'node_offline', why));
      else stream.breakOff(why);
    }
  }

  stop(): void {
    clearInterval(this.keepalive);
    for (const stream of [...this.streams.values()]) {
      if (stream.state === 'opening')
        stream.fail(new ClientError(504, 'node_timeout', 'the cluster manager is stopping'));
      else stream.breakOff('the cluster manager is stopping');
    }
  }

  /** @internal (RelayedLogStream) */
  grant(stream: RelayedLogStream, upTo: number): void {
    this.send(stream.request.nodeId, { type: 'credit', requestId: stream.requestId, upTo });
  }

  /** @internal (RelayedLogStream) */
  cancelAtNode(stream: RelayedLogStream): void {
    this.send(stream.request.nodeId, { type: 'cancel', requestId: stream.requestId });
  }

  /** @internal (RelayedLogStream) */
  forget(stream: RelayedLogStream): void {
    this.streams.delete(stream.requestId);
  }

  /** QoS 0: a log message is for now, never queued for a node that is away. */
  private send(nodeId: string, message: LogControlInput): void {
    this.mqtt?.publish(topics.logsControl(nodeId), JSON.stringify(message), { qos: 0 }, (error) => {
      if (error) this.logger.warn({ nodeId, err: error.message }, 'cannot send a log control message');
    });
  }
}

function lostLine(bytes: number): string {
  return `\n[edge: ${bytes} bytes of output lost on the way]\n`;
}

/** The answer for a stream the node ended before it opened. */
function refusal(message: Extract<LogStreamMessage, { type: 'end' }>, request: LogRequest): ClientError {
  const said = message.error?.message ?? `it ended the stream (${message.reason})`;
  switch (message.error?.code) {
    case 'not_found':
      return new ClientError(409, 'no_workload', `node ${request.nodeName}: ${said}`);
    case 'too_many_streams':
      return new ClientError(503, 'too_many_streams', `node ${request.nodeName}: ${said}`);
    default:
      return new ClientError(502, 'node_error', `node ${request.nodeName} cannot read the output: ${said}`);
  }
}

/** Undefined for a stream that ended as it should (all output sent), else why it broke off. */
function brokenBy(
  message: Extract<LogStreamMessage, { type: 'end' }>,
  request: LogRequest,
): string | undefined {
  switch (message.reason) {
    case 'eof':
      return undefined;
    case 'lease':
      return `node ${request.nodeName} ended the stream: its lease was not renewed in time`;
    case 'cancelled':
      return `node ${request.nodeName} cancelled the stream`;
    case 'error':
      return `node ${request.nodeName} cannot read on: ${message.error?.message ?? 'an error'}`;
  }
}
