import { Router } from 'express';
import { notFound } from '../../errors.js';
import type { NodeLiveness } from '../../liveness/node-liveness.js';
import { instanceView, type Store } from '../../store/index.js';
import { nodeViews } from '../node-views.js';

export function nodeRoutes(store: Store, liveness: NodeLiveness): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    res.json(nodeViews(store, liveness));
  });
  router.get('/:id', (req, res) => {
    const node = store.nodes.find(req.params.id);
    if (!node) throw notFound('node', req.params.id);
    const [view] = nodeViews(store, liveness, [node]);
    const jobs = new Map(store.jobs.listJobs().map((job) => [job.id, job.name]));
    res.json({
      ...view,
      telemetry: liveness.latestTelemetry(node.id) ?? node.telemetry,
      instances: store.jobs.instancesOnNode(node.id).map((instance) => ({
        job: instance.jobId,
        jobName: jobs.get(instance.jobId) ?? null,
        ...instanceView(instance, node.name),
      })),
    });
  });
  return router;
}
