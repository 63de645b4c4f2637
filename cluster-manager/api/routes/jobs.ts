import { Router } from 'express';
import { z } from 'zod';
import { fieldProblems, JobSpecSchema } from '../../../shared/index.js';
import { invalid } from '../../errors.js';
import type { JobService } from '../../jobs/job-service.js';

const MoveRequestSchema = z.strictObject({
  instance: z.number().int().min(0).default(0),
  to: z.string().min(1).max(253).optional(),
});
const ReplicateRequestSchema = z.strictObject({ replicas: z.number().int().min(0).max(1000) });

/** Parses a body with its schema or answers 400 naming each bad field. */
function parseBody<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  if (body === undefined)
    throw invalid(`send ${what} as a JSON body`, [{ path: '(body)', message: 'missing' }]);
  const result = schema.safeParse(body);
  if (!result.success) {
    const details = fieldProblems(result.error);
    throw invalid(`invalid ${what}: ${details.map((d) => d.path).join(', ')}`, details);
  }
  return result.data;
}

export function jobRoutes(jobs: JobService): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    res.json(jobs.list());
  });
  router.post('/', (req, res) => {
    const spec = parseBody(JobSpecSchema, req.body, 'job spec');
    res.status(201).json(jobs.create(spec));
  });
  router.get('/:id', (req, res) => {
    res.json(jobs.get(req.params.id));
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
