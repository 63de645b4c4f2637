import { z } from 'zod';
import { TECHNOLOGIES } from './job.js';

/**
 * Instance output streamed on demand (issue 14): the cluster manager asks a node on `nodes/<id>/logs/control`,
 * the node answers on `nodes/<id>/logs/stream` over the MQTT connection it dialled out. Flow control is by
 * credit, counted in bytes of output (the UTF-8 of the chunks' `data`): a node sends a chunk only while what it
 * sent is below the `upTo` it was granted, and the cluster manager grants more only as its HTTP reader takes
 * what it got. Every message is QoS 0: nothing of a stream is queued for a node that is away, and each chunk's
 * `offset` (the bytes sent before it) makes a lost one visible.
 */

/** Most bytes of output read for one chunk (its JSON stays far below the broker's 256 KiB packet limit). */
export const LOG_CHUNK_BYTES = 16 * 1024;
/** Bytes of output a node may send ahead of what the cluster manager's HTTP reader took. */
export const LOG_CREDIT_BYTES = 128 * 1024;
/** How often the cluster manager renews each stream's lease (its credit again, changed or not). */
export const LOG_KEEPALIVE_MS = 5_000;
/** A stream whose lease is not renewed for this long ends at the node: its reader or cluster manager is gone. */
export const LOG_LEASE_MS = 15_000;
/** Streams one node serves at once; one more is refused with `too_many_streams`. */
export const MAX_LOG_STREAMS_PER_NODE = 16;
/** The largest `tail` asked for (lines). */
export const MAX_LOG_TAIL = 1_000_000;

export const LOG_STREAM_NAMES = ['stdout', 'stderr'] as const;
export type LogStreamName = (typeof LOG_STREAM_NAMES)[number];
/** Which of a workload's streams a reader wants. */
export const LOG_STREAM_CHOICES = ['all', 'stdout', 'stderr'] as const;
export type LogStreamChoice = (typeof LOG_STREAM_CHOICES)[number];

/**
 * From when on output is wanted: `agoMs` before now by the node's own clock (a worker's clock may be off, and
 * "the last 10 minutes" should mean its last 10 minutes), or `at`, an absolute time (epoch ms).
 */
export const LogSinceSchema = z.union([
  z.strictObject({ agoMs: z.number().int().min(0) }),
  z.strictObject({ at: z.number().int().min(0) }),
]);
export type LogSince = z.infer<typeof LogSinceSchema>;

const RequestIdSchema = z.uuid();

/** `nodes/<id>/logs/control`: the cluster manager opens, grants credit to (and so keeps alive), and cancels. */
export const LogControlSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('open'),
    requestId: RequestIdSchema,
    job: z.string().min(1).max(128),
    instance: z.number().int().min(0),
    /** The generation the cluster manager placed there; the node takes its newest workload of the instance without. */
    generation: z.number().int().min(0).optional(),
    follow: z.boolean(),
    /** The last lines only (Docker: of both streams together; native: of each file); absent: everything kept. */
    tail: z.number().int().min(0).max(MAX_LOG_TAIL).optional(),
    since: LogSinceSchema.optional(),
    streams: z.enum(LOG_STREAM_CHOICES).default('all'),
    /** The first credit: chunks may be sent while the bytes sent are below it. */
    upTo: z.number().int().min(0),
  }),
  z.strictObject({ type: z.literal('credit'), requestId: RequestIdSchema, upTo: z.number().int().min(0) }),
  z.strictObject({ type: z.literal('cancel'), requestId: RequestIdSchema }),
]);
export type LogControl = z.infer<typeof LogControlSchema>;
export type LogControlInput = z.input<typeof LogControlSchema>;

/** Why a stream ended: `eof` (all there is was sent), `cancelled`, `lease` (not renewed in time), `error`. */
export const LOG_END_REASONS = ['eof', 'cancelled', 'lease', 'error'] as const;
export type LogEndReason = (typeof LOG_END_REASONS)[number];

/**
 * `nodes/<id>/logs/stream`: `opened` once the workload's output is open, `chunk`s (`offset`: the bytes of output
 * sent before it), one `end` (`offset`: all bytes sent). A request the node cannot serve ends at once with an
 * `error`:
 * `not_found` (no workload of that instance here), `too_many_streams`, `unknown_stream` (credit for a stream the
 * node does not have: it restarted), `runtime_error`.
 */
export const LogStreamMessageSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('opened'),
    requestId: RequestIdSchema,
    technology: z.enum(TECHNOLOGIES),
  }),
  z.strictObject({
    type: z.literal('chunk'),
    requestId: RequestIdSchema,
    offset: z.number().int().min(0),
    stream: z.enum(LOG_STREAM_NAMES),
    // At most LOG_CHUNK_BYTES of output read, as text: a character split between reads comes whole with the second.
    data: z
      .string()
      .min(1)
      .max(LOG_CHUNK_BYTES + 8),
  }),
  z.strictObject({
    type: z.literal('end'),
    requestId: RequestIdSchema,
    offset: z.number().int().min(0),
    reason: z.enum(LOG_END_REASONS),
    error: z.strictObject({ code: z.string().max(64), message: z.string().max(4096) }).optional(),
  }),
]);
export type LogStreamMessage = z.infer<typeof LogStreamMessageSchema>;

const SINCE_UNITS_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * `since` as an operator writes it: a duration back from now (`90s`, `10m`, `2h`, `7d`), an RFC 3339 time
 * (`2024-05-01T10:00:00Z`) or epoch milliseconds. Returns what it means, or a sentence saying what is wrong.
 */
export function parseLogSince(text: string): { since: LogSince } | { problem: string } {
  const value = text.trim();
  const duration = /^(\d{1,9})([smhd])$/.exec(value);
  if (duration) return { since: { agoMs: Number(duration[1]) * SINCE_UNITS_MS[duration[2]!]! } };
  if (/^\d{1,15}$/.test(value)) return { since: { at: Number(value) } };
  if (RFC3339.test(value)) {
    const at = Date.parse(value.replace(' ', 'T'));
    if (!Number.isNaN(at) && at >= 0) return { since: { at } };
  }
  return {
    problem: 'a duration back from now (90s, 10m, 2h, 7d), an RFC 3339 time or epoch milliseconds',
  };
}

/** The time (epoch ms on `now`'s clock) from which output is wanted. */
export function sinceTime(since: LogSince, now: number): number {
  return 'agoMs' in since ? Math.max(0, now - since.agoMs) : since.at;
}
