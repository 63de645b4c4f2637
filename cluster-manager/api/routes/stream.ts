import { Router } from 'express';
import { z } from 'zod';
import { STREAM_KINDS, type StreamKind } from '../../../shared/index.js';
import type { AccessTokens } from '../../access/access-tokens.js';
import { ClientError, notFound } from '../../errors.js';
import type { StreamHub } from '../../push/stream-hub.js';
import type { Store, TokenRecord } from '../../store/index.js';
import { parseBody } from '../body.js';

const KIND_LIST = new RegExp(`^(${STREAM_KINDS.join('|')})(,(${STREAM_KINDS.join('|')}))*$`);

export const StreamQuerySchema = z.object({
  /** Which messages: `event`, `job`, `node`, comma-separated; all of them when absent. */
  kinds: z
    .string()
    .regex(KIND_LIST, `a comma-separated list of ${STREAM_KINDS.join(', ')}`)
    .optional()
    .describe(`which messages, comma-separated: ${STREAM_KINDS.join(', ')} (default: all)`),
  type: z.string().min(1).max(100).optional().describe('events of this type only'),
  job: z
    .string()
    .min(1)
    .max(253)
    .optional()
    .describe("a job's id or name: its events and its `job` notices only"),
  node: z
    .string()
    .min(1)
    .max(253)
    .optional()
    .describe("a node's id or name: its events and its `node` notices only"),
  after: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .describe('first the events after this id (as `Last-Event-ID`, which wins when both are given)'),
});

/** `Last-Event-ID`: the id of the last event a client got, sent again when it reconnects. */
export const StreamHeadersSchema = z.object({
  'last-event-id': z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .describe(
      'the id of the last event this client got: the stream starts after it (a reconnect misses none)',
    ),
});

/**
 * `GET /api/stream`: server-sent events (see StreamHub). Filters are resolved once, as `GET /api/events` does:
 * an unknown job or node is a 404, a bad parameter a 400, and more streams than the limit a 503.
 */
export function streamRoutes(store: Store, hub: StreamHub, tokens: AccessTokens): Router {
  const router = Router();
  router.get('/', (req, res) => {
    const query = parseBody(StreamQuerySchema, req.query, 'stream query');
    const lastEventId = parseBody(
      StreamHeadersSchema,
      { 'last-event-id': req.headers['last-event-id'] },
      'Last-Event-ID header (an event id)',
    )['last-event-id'];
    const job = query.job === undefined ? undefined : store.jobs.findJob(query.job);
    if (query.job !== undefined && !job) throw notFound('job', query.job);
    const node = query.node === undefined ? undefined : store.nodes.find(query.node);
    if (query.node !== undefined && !node) throw notFound('node', query.node);
    if (hub.full) {
      throw new ClientError(
        503,
        'too_many_streams',
        `this cluster manager serves ${hub.maxStreams} streams at most (--max-streams); try again later`,
      );
    }
    res.status(200).set({
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      // nginx and its kind would hold the answer back to buffer it.
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    req.socket.setNoDelay(true);
    // How long EventSource waits before it reconnects; edgectl and the dashboard back off by themselves.
    res.write('retry: 1000\n\n');
    const token = res.locals.token as TokenRecord;
    hub.open(
      res,
      {
        kinds: new Set((query.kinds?.split(',') ?? STREAM_KINDS) as StreamKind[]),
        ...(query.type !== undefined ? { type: query.type } : {}),
        ...(job ? { jobId: job.id } : {}),
        ...(node ? { nodeId: node.id } : {}),
      },
      lastEventId ?? query.after,
      () => tokens.stillValid(token),
    );
  });
  return router;
}
