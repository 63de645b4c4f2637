import { Router } from 'express';
import { z } from 'zod';
import { NODE_STATUSES, NodeLabelPatchSchema } from '../../../shared/index.js';
import { notFound } from '../../errors.js';
import type { NodeOperations } from '../../jobs/node-operations.js';
import type { NodeLiveness } from '../../liveness/node-liveness.js';
import { instanceView, labelsOf, type NodeRecord, type Store } from '../../store/index.js';
import { HISTORY_STEP_MS, type TelemetryHistory } from '../../telemetry/telemetry-history.js';
import { parseBody } from '../body.js';
import { type Allocations, nodeViews } from '../node-views.js';
import {
  compareText,
  keyValuePairs,
  oneOf,
  paginate,
  parseListQuery,
  type SortOrder,
  sendPage,
} from '../pagination.js';

interface NodeKey {
  name: string;
  id: string;
}

/** `GET /api/nodes`' filters (with `limit` and `cursor`). */
export const NODE_LIST_FILTERS = {
  status: oneOf(NODE_STATUSES, 'nodes with this status only'),
  label: keyValuePairs('key=value: nodes with this label only; given again, nodes with all of them'),
};

/** By name, then id: names are unique among online nodes only. */
const byNameThenId: SortOrder<NodeRecord, NodeKey> = {
  keyOf: (node) => ({ name: node.name, id: node.id }),
  compare: (a, b) => compareText(a.name, b.name) || compareText(a.id, b.id),
  cursor: z.strictObject({ name: z.string(), id: z.string() }),
};

export function nodeRoutes(
  store: Store,
  liveness: NodeLiveness,
  allocations: Allocations,
  removeNode: (ref: string) => object,
  operations: NodeOperations,
  history: TelemetryHistory,
): Router {
  const view = (node: NodeRecord) => nodeViews(liveness, allocations, [node])[0]!;
  const router = Router();
  router.get('/', (req, res) => {
    const query = parseListQuery(req, byNameThenId, NODE_LIST_FILTERS);
    const { status, label } = query.filters;
    const matching = store.nodes
      .list()
      .filter(
        (node) =>
          (status === undefined || (liveness.isOnline(node.id) ? 'online' : 'offline') === status) &&
          label.every(([key, value]) => labelsOf(node)[key] === value),
      );
    const page = paginate(matching, byNameThenId, query);
    sendPage(req, res, query, page.nextCursor, nodeViews(liveness, allocations, page.items));
  });
  router.get('/:id', (req, res) => {
    const node = store.nodes.find(req.params.id);
    if (!node) throw notFound('node', req.params.id);
    const [view] = nodeViews(liveness, allocations, [node]);
    const instances = store.jobs.instancesOnNode(node.id);
    const jobNames = new Map(
      [...new Set(instances.map((instance) => instance.jobId))].map((jobId) => [
        jobId,
        store.jobs.getJob(jobId)?.name ?? null,
      ]),
    );
    res.json({
      ...view,
      telemetry: liveness.latestTelemetry(node.id) ?? node.telemetry,
      instances: instances.map((instance) => ({
        job: instance.jobId,
        jobName: jobNames.get(instance.jobId) ?? null,
        ...instanceView(instance, node.name),
      })),
    });
  });
  // The last 30 minutes of CPU, memory and GPU figures, a point per 15 s at most, oldest first.
  router.get('/:id/history', (req, res) => {
    const node = store.nodes.find(req.params.id);
    if (!node) throw notFound('node', req.params.id);
    res.json({ node: node.name, stepMs: HISTORY_STEP_MS, points: history.of(node.id) });
  });
  // Cordoned, a node takes no new instance; what runs there stays (drain moves it away).
  router.post('/:id/cordon', (req, res) => {
    res.json(view(operations.setCordoned(req.params.id, true)));
  });
  // Drained, its instances move away make-before-break, each job's update.maxParallel at a time.
  router.post('/:id/drain', (req, res) => {
    res.json(view(operations.drain(req.params.id)));
  });
  router.post('/:id/uncordon', (req, res) => {
    res.json(view(operations.setCordoned(req.params.id, false)));
  });
  router.patch('/:id/labels', (req, res) => {
    const patch = parseBody(NodeLabelPatchSchema, req.body, 'label changes ({"key": "value" or null})');
    res.json(view(operations.patchLabels(req.params.id, patch)));
  });
  // Removes the node for good: its instances are placed again elsewhere, its secret is revoked, it is cut off.
  router.delete('/:id', (req, res) => {
    res.json(removeNode(req.params.id));
  });
  return router;
}
