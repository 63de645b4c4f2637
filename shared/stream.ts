import { z } from 'zod';
import { ClusterEventSchema } from './events.js';

/**
 * What `GET /api/stream` pushes (server-sent events): `event`, a cluster event (its SSE `id:` is the event's id,
 * so a client that reconnects with `Last-Event-ID` misses none); `job` and `node`, notices that a job or a node
 * changed (fetch it again); `resync`, the stream could not say everything (fetch what you show again).
 */
export const STREAM_KINDS = ['event', 'job', 'node'] as const;
export type StreamKind = (typeof STREAM_KINDS)[number];

/** `job` and `node` notices: which one changed. A job that is gone answers 404 when fetched. */
export const StreamNoticeSchema = z.object({ id: z.string() });

/** `resync`: notices were dropped (the client did not read fast enough) or events were pruned before it came. */
export const StreamResyncSchema = z.object({ reason: z.string() });

export type StreamMessage =
  | { kind: 'event'; id: number; data: z.infer<typeof ClusterEventSchema> }
  | { kind: 'job' | 'node'; data: z.infer<typeof StreamNoticeSchema> }
  | { kind: 'resync'; data: z.infer<typeof StreamResyncSchema> };

const MESSAGE_SCHEMAS = {
  event: ClusterEventSchema,
  job: StreamNoticeSchema,
  node: StreamNoticeSchema,
  resync: StreamResyncSchema,
} as const;

/** One message of an event stream as the SSE format has it: `event:`, `data:` (lines joined) and `id:`. */
export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/**
 * Reads the text/event-stream format (WHATWG HTML, "server-sent events") from chunks of text as they come:
 * lines end in LF, CRLF or CR; a blank line ends a message; lines starting with `:` are comments (heartbeats).
 */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;

  /** The messages completed by this chunk. */
  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const messages: SseMessage[] = [];
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (end === -1 || (end === this.buffer.length - 1 && this.buffer[end] === '\r')) break;
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + (this.buffer.startsWith('\r\n', end) ? 2 : 1));
      const message = this.line(line);
      if (message) messages.push(message);
    }
    return messages;
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') {
      const message =
        this.data.length > 0
          ? {
              event: this.event || 'message',
              data: this.data.join('\n'),
              ...(this.id ? { id: this.id } : {}),
            }
          : undefined;
      this.event = '';
      this.data = [];
      this.id = undefined;
      return message;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
    return undefined;
  }
}

/** A message of `GET /api/stream`, checked; undefined for a kind this client does not know (a newer server). */
export function readStreamMessage(message: SseMessage): StreamMessage | undefined {
  const kind = message.event;
  if (!(kind in MESSAGE_SCHEMAS)) return undefined;
  const data = MESSAGE_SCHEMAS[kind as keyof typeof MESSAGE_SCHEMAS].parse(JSON.parse(message.data));
  if (kind === 'event') return { kind, id: (data as { id: number }).id, data } as StreamMessage;
  return { kind, data } as StreamMessage;
}
