import type { ServerResponse } from 'node:http';
import { type Logger, monotonicMs } from '../../shared/index.js';
import type { Store } from '../store/index.js';
import { EventStream, message, type StreamFilter } from './event-stream.js';
import { NoticeWindow } from './notice-window.js';

export interface StreamLimits {
  /** Streams open at once; one more is refused (503). */
  maxStreams: number;
  /** A comment on every live stream this often. */
  heartbeatMs: number;
  /** A stream whose socket has not drained for this long is cut off. */
  stallMs: number;
  /** A stream whose socket has not drained while this many events were recorded is cut off. */
  maxLagEvents: number;
  /** Job notices are gathered this long (one per job per window). */
  jobWindowMs: number;
  /** Node notices are gathered this long: at most one per node per window, however often it reports. */
  nodeWindowMs: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = {
  maxStreams: 256,
  heartbeatMs: 15_000,
  stallMs: 30_000,
  maxLagEvents: 1000,
  jobWindowMs: 250,
  nodeWindowMs: 1000,
};

/** New events are read from the log this many at a time, once for every stream. */
const LIVE_PAGE = 500;

/** What the hub tells the cluster manager's metrics. */
export interface StreamHooks {
  /** How many streams are open now, after each change. */
  openCount: (count: number) => void;
  cutOff: () => void;
}

/**
 * The server push of `GET /api/stream`: every open stream, fed from the store. New events are read from the log
 * once (after the transaction that recorded them is over) and handed to every live stream; jobs and nodes that
 * changed are gathered into notice windows; a stream that falls behind catches up from the log by itself. A
 * stream that stops reading is cut off (it resumes with `Last-Event-ID`), so no client makes this process hold
 * more than a socket buffer for it.
 */
export class StreamHub {
  private readonly streams = new Set<EventStream>();
  /** The newest event handed to the live streams. */
  private newestSent: number;
  private flushScheduled = false;
  private readonly jobs: NoticeWindow;
  private readonly nodes: NoticeWindow;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly unsubscribe: (() => void)[];
  private peakBuffered = 0;
  private cutOffCount = 0;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly limits: StreamLimits,
    private readonly hooks: StreamHooks,
    private readonly logger: Logger,
  ) {
    this.newestSent = store.events.newestId();
    this.jobs = new NoticeWindow(limits.jobWindowMs, (ids) => this.notify('job', ids));
    this.nodes = new NoticeWindow(limits.nodeWindowMs, (ids) => this.notify('node', ids));
    this.unsubscribe = [
      store.events.recorded.subscribe(() => this.scheduleFlush()),
      store.jobs.changes.subscribe((jobId) => this.jobChanged(jobId)),
      store.nodes.changes.subscribe((nodeId) => this.nodeChanged(nodeId)),
      store.nodes.updated.subscribe((nodeId) => this.nodeChanged(nodeId)),
    ];
    this.heartbeat = setInterval(() => this.beat(), limits.heartbeatMs);
    this.heartbeat.unref();
  }

  get full(): boolean {
    return this.streams.size >= this.limits.maxStreams;
  }

  get maxStreams(): number {
    return this.limits.maxStreams;
  }

  /**
   * A new stream on `res` (headers already sent): it first catches up on the events after `after` (none when
   * undefined: it starts now), then follows. `stillAllowed` is asked whenever a token is revoked and at every
   * heartbeat: false ends the stream.
   */
  open(res: ServerResponse, filter: StreamFilter, after: number | undefined, stillAllowed: () => boolean) {
    const newest = this.store.events.newestId();
    // An id this log never reached (its data dir was started afresh): from now, and the client is told.
    const from = after === undefined || after > newest ? newest : after;
    const stream = new EventStream(res, filter, this.store, from, {
      now: monotonicMs,
      buffered: (bytes) => {
        this.peakBuffered = Math.max(this.peakBuffered, bytes);
      },
      stillAllowed,
    });
    this.streams.add(stream);
    this.hooks.openCount(this.streams.size);
    res.once('close', () => this.forget(stream));
    const oldest = this.store.events.oldestId();
    if (after !== undefined && after > newest)
      stream.resync(
        `no event ${after} here: the newest is ${newest} (the cluster manager's log started afresh)`,
      );
    else if (after !== undefined && oldest > after + 1)
      stream.resync(`events ${after + 1} to ${oldest - 1} were pruned before this client asked for them`);
    stream.catchUp();
  }

  /** A node was heard (telemetry): its usage and last-seen changed. One notice per node per window. */
  nodeChanged(nodeId: string): void {
    if (this.streams.size > 0) this.nodes.add(nodeId);
  }

  /** What the hub holds (tests read it): streams open, the most a stream held in this process's buffers, cut-offs. */
  stats(): {
    open: number;
    peakBufferedBytes: number;
    cutOff: number;
    streams: { state: EventStream['state']; bufferedBytes: number }[];
  } {
    return {
      open: this.streams.size,
      peakBufferedBytes: this.peakBuffered,
      cutOff: this.cutOffCount,
      streams: [...this.streams].map(({ state, bufferedBytes }) => ({ state, bufferedBytes })),
    };
  }

  /** Ends every stream (clients reconnect elsewhere or later) and stops listening to the store. */
  close(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    this.jobs.stop();
    this.nodes.stop();
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    for (const stream of this.streams) stream.end();
    this.streams.clear();
  }

  private jobChanged(jobId: string): void {
    if (this.streams.size > 0) this.jobs.add(jobId);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    // After the transaction that recorded the event (better-sqlite3's are synchronous): never an uncommitted row.
    setImmediate(() => {
      this.flushScheduled = false;
      if (!this.closed) this.flush();
    });
  }

  private flush(): void {
    if (this.streams.size === 0) {
      this.newestSent = this.store.events.newestId();
      return;
    }
    for (;;) {
      const page = this.store.events.following(LIVE_PAGE, { afterId: this.newestSent });
      // A token revoked ends its streams at once; one that expires, at the next heartbeat.
      if (page.some((event) => event.type === 'token.revoked')) this.endRefused();
      for (const stream of this.streams) stream.onEvents(page);
      this.newestSent = page.at(-1)?.id ?? this.newestSent;
      if (page.length < LIVE_PAGE) break;
    }
    // Behind for a while is a slow link (it catches up from the log when it drains); more events than this
    // recorded while its socket never drained is a client that stopped reading.
    for (const stream of this.streams)
      if (stream.behindSince && this.newestSent - stream.behindSince.newestId > this.limits.maxLagEvents)
        this.cutOff(stream, `${this.limits.maxLagEvents} events were recorded while it did not read`);
  }

  private notify(kind: 'job' | 'node', ids: ReadonlySet<string>): void {
    const notices = new Map([...ids].map((id) => [id, message(kind, { id })]));
    for (const stream of this.streams) stream.onNotices(kind, notices);
  }

  /** Ends the streams whose token no longer opens them (revoked, expired). */
  private endRefused(): void {
    for (const stream of this.streams)
      if (!stream.stillAllowed()) {
        stream.end();
        this.forget(stream);
      }
  }

  private beat(): void {
    const now = monotonicMs();
    this.endRefused();
    for (const stream of this.streams) {
      if (stream.behindSince && now - stream.behindSince.at > this.limits.stallMs)
        this.cutOff(stream, `it did not read for ${Math.round(this.limits.stallMs / 1000)} s`);
      else stream.heartbeat();
    }
  }

  private cutOff(stream: EventStream, why: string): void {
    this.cutOffCount++;
    this.hooks.cutOff();
    this.logger.info(
      { why },
      'event stream cut off: the client falls behind (it resumes with Last-Event-ID)',
    );
    stream.end();
    this.forget(stream);
  }

  private forget(stream: EventStream): void {
    if (!this.streams.delete(stream)) return;
    this.hooks.openCount(this.streams.size);
  }
}
