import type { ServerResponse } from 'node:http';
import type { ClusterEvent, StreamKind } from '../../shared/index.js';
import type { EventFilter, Store } from '../store/index.js';

/** What one stream asked for: the kinds of message, and the filters (ids, not names). */
export interface StreamFilter {
  kinds: ReadonlySet<StreamKind>;
  /** Events of this type only. */
  type?: string;
  /** Events about this job, and `job` notices of this job, only. */
  jobId?: string;
  /** Events about this node, and `node` notices of this node, only. */
  nodeId?: string;
}

/** Writes are gathered up to this size: one TLS record and one syscall for a burst of small messages. */
const CHUNK_BYTES = 16 * 1024;
/**
 * Events read from the log at a time while a stream catches up, and written whole (a page read is not read
 * again for the few events a full socket took): with the socket's high-water mark, the most this process holds
 * for a client.
 */
export const CATCH_UP_PAGE = 32;

/**
 * One client of `GET /api/stream`. It is `live` (new events and notices are written to it as they come) or
 * `behind`: its socket did not take the last write (`res.write()` said false), so nothing more is written until
 * it drains. A stream behind holds no queue: the event log is its buffer (on drain it reads what it missed from
 * the log, from `cursor`), and notices it missed become one `resync`. What this process buffers for a client is
 * therefore at most its socket's high-water mark plus one write (a chunk of new events, or a page of the log
 * while it catches up), however slow the client is.
 */
export class EventStream {
  /** The newest event this stream has looked at (written, or passed over by its filter). */
  cursor: number;
  state: 'live' | 'behind' = 'live';
  /** While behind: the newest event of the log when it fell behind, and when (monotonic ms). */
  behindSince?: { newestId: number; at: number };
  /** Notices were dropped while behind: a `resync` goes first once it drains. */
  private missedNotices = false;
  private closed = false;

  constructor(
    private readonly res: ServerResponse,
    readonly filter: StreamFilter,
    private readonly store: Store,
    cursor: number,
    private readonly hooks: {
      now: () => number;
      /** What this process holds for the client now: called after every write. */
      buffered: (bytes: number) => void;
      /** Whether its token still opens the stream (not revoked, not expired). */
      stillAllowed: () => boolean;
    },
  ) {
    this.cursor = cursor;
    res.on('drain', () => this.drained());
  }

  stillAllowed(): boolean {
    return this.hooks.stillAllowed();
  }

  get isClosed(): boolean {
    return this.closed || this.res.destroyed;
  }

  /** Bytes written to this stream that its socket has not taken yet. */
  get bufferedBytes(): number {
    return this.res.writableLength;
  }

  /** Sends a `resync` now (or once it drains): the client should fetch what it shows again. */
  resync(reason: string): void {
    if (this.state === 'behind') this.missedNotices = true;
    else this.write(message('resync', { reason }));
  }

  /** Writes the events of the log after the cursor that pass the filter, until caught up or the socket is full. */
  catchUp(): void {
    const filter: EventFilter = {
      ...(this.filter.type !== undefined ? { type: this.filter.type } : {}),
      ...(this.filter.jobId !== undefined ? { jobId: this.filter.jobId } : {}),
      ...(this.filter.nodeId !== undefined ? { nodeId: this.filter.nodeId } : {}),
    };
    while (this.state === 'live' && !this.isClosed) {
      const newest = this.store.events.newestId();
      const page = this.filter.kinds.has('event')
        ? this.store.events.following(CATCH_UP_PAGE, { ...filter, afterId: this.cursor })
        : [];
      if (!this.deliver(page, Number.POSITIVE_INFINITY)) return;
      // The whole log was looked at: nothing after `newest` passes the filter yet.
      if (page.length < CATCH_UP_PAGE) {
        this.cursor = Math.max(this.cursor, newest);
        return;
      }
    }
  }

  /**
   * New events of the log, oldest first (the hub reads them once for every stream). A stream behind skips them:
   * it reads them from the log when it drains.
   */
  onEvents(events: ClusterEvent[]): void {
    if (this.state !== 'live' || this.isClosed) return;
    this.deliver(
      events.filter((event) => event.id > this.cursor),
      CHUNK_BYTES,
    );
  }

  /** `job` or `node` notices, each id once, with its message (formatted once for every stream). */
  onNotices(kind: 'job' | 'node', notices: ReadonlyMap<string, string>): void {
    if (!this.filter.kinds.has(kind) || this.isClosed) return;
    const only = kind === 'job' ? this.filter.jobId : this.filter.nodeId;
    let chunk = '';
    for (const [id, text] of notices) {
      if (only !== undefined && id !== only) continue;
      if (this.state === 'behind') {
        this.missedNotices = true;
        return;
      }
      chunk += text;
      if (chunk.length >= CHUNK_BYTES) {
        this.write(chunk);
        chunk = '';
      }
    }
    if (chunk) this.write(chunk);
  }

  /** A comment line: proxies keep the connection, and a client that is gone shows up as a socket that is full. */
  heartbeat(): void {
    if (this.state === 'live') this.write(': keep-alive\n\n');
  }

  /** Ends the stream: the client reconnects with `Last-Event-ID` and misses nothing the log still holds. */
  end(): void {
    if (this.closed) return;
    this.closed = true;
    // A client that does not read would hold `end()` open forever: its socket goes now.
    if (this.state === 'behind') this.res.destroy();
    else this.res.end();
  }

  /**
   * Writes each event that passes the filter, in writes of about `chunkBytes`, moving the cursor; stops after a
   * write the socket did not take (false).
   */
  private deliver(events: ClusterEvent[], chunkBytes: number): boolean {
    let chunk = '';
    for (const event of events) {
      if (this.passes(event)) chunk += eventMessage(event);
      this.cursor = event.id;
      if (chunk.length >= chunkBytes) {
        if (!this.write(chunk)) return false;
        chunk = '';
      }
    }
    return chunk === '' || this.write(chunk);
  }

  private passes(event: ClusterEvent): boolean {
    const { filter } = this;
    return (
      filter.kinds.has('event') &&
      (filter.type === undefined || event.type === filter.type) &&
      (filter.jobId === undefined || event.jobId === filter.jobId) &&
      (filter.nodeId === undefined || event.nodeId === filter.nodeId)
    );
  }

  /** One write; false (and behind) when the socket's buffer is over its high-water mark. */
  private write(text: string): boolean {
    if (this.isClosed) return false;
    const taken = this.res.write(text);
    this.hooks.buffered(this.res.writableLength);
    if (!taken && this.state === 'live') {
      this.state = 'behind';
      this.behindSince = { newestId: this.store.events.newestId(), at: this.hooks.now() };
    }
    return taken;
  }

  private drained(): void {
    if (this.state !== 'behind' || this.isClosed) return;
    this.state = 'live';
    this.behindSince = undefined;
    if (this.missedNotices) {
      this.missedNotices = false;
      this.write(message('resync', { reason: 'notices were dropped while this client did not read' }));
    }
    this.catchUp();
  }
}

/** One SSE message; JSON has no raw line breaks, so `data` is one line. */
export function message(kind: string, data: unknown, id?: number): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${kind}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** An event's message, formatted once however many streams it goes to (the hub hands them all one object). */
const eventMessages = new WeakMap<ClusterEvent, string>();
function eventMessage(event: ClusterEvent): string {
  let text = eventMessages.get(event);
  if (text === undefined) {
    text = message('event', event, event.id);
    eventMessages.set(event, text);
  }
  return text;
}
