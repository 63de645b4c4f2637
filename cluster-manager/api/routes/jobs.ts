import { Router } from 'express';
import { z } from 'zod';
import { JOB_STATES, JobSpecSchema } from '../../../shared/index.js';
import type { JobService } from '../../jobs/job-service.js';
import type { JobRecord } from '../../store/index.js';
import { parseBody } from '../body.js';
import {
  compareText,
  oneOf,
  paginate,
  parseListQuery,
  type SortOrder,
  sendPage,
  someText,
} from '../pagination.js';

/** `GET /api/jobs`' filters (with `limit` and `cursor`). */
export const JOB_LIST_FILTERS = {
  state: oneOf(JOB_STATES, 'jobs in this state only'),
  node: someText("a node's id or name: the jobs with an instance on that node"),
};

/** `POST /api/jobs`' query: a dry run changes nothing. */
export const CreateJobQuerySchema = z.object({
  dryRun: z
    .string()
    .optional()
    .describe('`true`: where each instance would go now, or why not; nothing is created'),
});

export const MoveRequestSchema = z.strictObject({
  instance: z.number().int().min(0).default(0),
  to: z.string().min(1).max(253).optional(),
});
export const ReplicateRequestSchema = z.strictObject({ replicas: z.number().int().min(0).max(1000) });

interface JobKey {
  createdAt: number;
  id: string;
}

/** Oldest first, then by id: the order jobs were always listed in. */
const byCreationThenId: SortOrder<JobRecord, JobKey> = {
  keyOf: (job) => ({ createdAt: job.createdAt, id: job.id }),
  compare: (a, b) => a.createdAt - b.createdAt || compareText(a.id, b.id),
  cursor: z.strictObject({ createdAt: z.number().int(), id: z.string() }),
};

export function jobRoutes(jobs: JobService): Router {
  const router = Router();
  router.get('/', (req, res) => {
    const query = parseListQuery(req, byCreationThenId, JOB_LIST_FILTERS);
    const page = paginate(jobs.records(query.filters), byCreationThenId, query);
    sendPage(req, res, query, page.nextCursor, jobs.views(page.items));
  });
  router.post('/', (req, res) => {
    const spec = parseBody(JobSpecSchema, req.body, 'job spec');
    // `?dryRun=true`: what it would do, changing nothing (`edgectl plan`).
    if (req.query.dryRun === 'true') res.json(jobs.plan(spec));
    else res.status(201).json(jobs.create(spec));
  });
  router.get('/:id', (req, res) => {
    res.json(jobs.get(req.params.id));
  });
  // A full spec: the same one changes nothing, `replicas` alone scales, anything else rolls out a new version.
  router.put('/:id', (req, res) => {
    const spec = parseBody(JobSpecSchema, req.body, 'job spec');
    if (req.query.dryRun === 'true') {
      res.json(jobs.planUpdate(req.params.id, spec));
      return;
    }
    const { job, action, changed } = jobs.update(req.params.id, spec);
    res.json({ ...job, change: { action, changed } });
  });
  router.get('/:id/versions', (req, res) => {
    res.json(jobs.versions(req.params.id));
  });
  router.delete('/:id', (req, res) => {
    res.status(202).json(jobs.remove(req.params.id));
  });
  router.post('/:id/move', (req, res) => {
    const move = parseBody(MoveRequestSchema, req.body ?? {}, 'move request');
    res.status(202).json(jobs.move(req.params.id, move.instance, move.to));
  });
  router.post('/:id/replicate', (req, res) => {
    const { replicas } = parseBody(ReplicateRequestSchema, req.body, 'replicate request');
    res.status(202).json(jobs.replicate(req.params.id, replicas));
  });
  return router;
}
