import { Router } from 'express';
import { z } from 'zod';
import { notFound } from '../../errors.js';
import type { Store } from '../../store/index.js';
import { parseBody } from '../body.js';

export const EventQuerySchema = z.object({
  /** 1 to 1000 (outside: the nearest; unreadable: 100), as it always was. */
  limit: z
    .unknown()
    .optional()
    .transform((value) => Math.min(1000, Math.max(1, Number.parseInt(String(value ?? '100'), 10) || 100)))
    .describe('how many, 1 to 1000 (default 100; a number outside: the nearest)'),
  type: z.string().min(1).max(100).optional().describe('events of this type only'),
  job: z.string().min(1).max(253).optional().describe("a job's id or name: its events only"),
  node: z.string().min(1).max(253).optional().describe("a node's id or name: its events only"),
  after: z.coerce
    .number()
    .int()
    .min(0)
    .optional()
    .describe("only events newer than this one (a follower's last)"),
});

/** `GET /api/events`: the newest events first, filtered by type, job, node, and after an event id. */
export function eventRoutes(store: Store): Router {
  const router = Router();
  router.get('/', (req, res) => {
    const query = parseBody(EventQuerySchema, req.query, 'event query');
    const job = query.job === undefined ? undefined : store.jobs.findJob(query.job);
    if (query.job !== undefined && !job) throw notFound('job', query.job);
    const node = query.node === undefined ? undefined : store.nodes.find(query.node);
    if (query.node !== undefined && !node) throw notFound('node', query.node);
    res.json(
      store.events.recent(query.limit, {
        ...(query.type !== undefined ? { type: query.type } : {}),
        ...(job ? { jobId: job.id } : {}),
        ...(node ? { nodeId: node.id } : {}),
        ...(query.after !== undefined ? { afterId: query.after } : {}),
      }),
    );
  });
  return router;
}
