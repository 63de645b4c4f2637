import express, { type Express, type Response } from 'express';
import { type Logger, VERSION } from '../../shared/index.js';
import type { AccessTokens } from '../access/access-tokens.js';
import { yamlBrowserDir } from '../dashboard/index.js';
import type { JobService } from '../jobs/job-service.js';
import type { NodeOperations } from '../jobs/node-operations.js';
import type { NodeRemoval } from '../jobs/node-removal.js';
import type { NodeLiveness } from '../liveness/node-liveness.js';
import type { LogRelay } from '../logs/log-relay.js';
import { type Metrics, setFleetGauges } from '../metrics.js';
import type { StreamHub } from '../push/stream-hub.js';
import type { Store } from '../store/index.js';
import type { TelemetryHistory } from '../telemetry/telemetry-history.js';
import { requireToken } from './auth.js';
import { errorHandler, requireJson, unknownRoute } from './http-errors.js';
import type { Allocations } from './node-views.js';
import { openApiDocument } from './openapi/document.js';
import { eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { logRoutes } from './routes/logs.js';
import { nodeRoutes } from './routes/nodes.js';
import { streamRoutes } from './routes/stream.js';
import { tokenRoutes } from './routes/tokens.js';
import { securityHeaders } from './security-headers.js';

export interface ApiDependencies {
  store: Store;
  jobs: JobService;
  liveness: NodeLiveness;
  /** What each node has allocated (the scheduler's in-memory view). */
  allocations: Allocations;
  /** Removes a node by id or name (404 when unknown); what it did. */
  removeNode: (ref: string) => { id: string; name: string } & NodeRemoval;
  /** Cordon and labels of a node, set by an operator. */
  nodeOperations: NodeOperations;
  /** Each node's recent CPU, memory and GPU figures, for the dashboard's charts. */
  history: TelemetryHistory;
  /** What the outbox holds, for `/metrics`. */
  outbox: { readonly unackedCount: number };
  /** Instance output from nodes (`GET /api/jobs/:id/instances/:n/logs`). */
  logs: LogRelay;
  metrics: Metrics;
  tokens: AccessTokens;
  /** The server push of `GET /api/stream`. */
  streams: StreamHub;
  /** The cluster CA (PEM) handed to anyone at `GET /api/cluster/ca`; undefined without one. */
  clusterCa?: string;
  dashboardDir?: string;
  logger: Logger;
}

/** The operator HTTP API of CONTRACT.md, plus `/metrics` and the dashboard. */
export function createApi(deps: ApiDependencies): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((req, res, next) => {
    res.on('finish', () =>
      deps.metrics.httpRequests.inc({ method: req.method, status: String(res.statusCode) }),
    );
    next();
  });
  app.get('/api/health', (_req, res) => {
    res.json({ status: 'ok', version: VERSION });
  });
  // Public: it describes the API and holds no data of the cluster.
  const openApi = openApiDocument();
  app.get('/api/openapi.json', (_req, res) => {
    res.json(openApi);
  });
  // Public: a worker fetches it before it trusts anything, and takes it only if the join token pins it.
  app.get('/api/cluster/ca', (_req, res) => {
    if (!deps.clusterCa) {
      res.status(404).json({
        error: {
          code: 'not_found',
          message: 'this cluster manager has no cluster CA (--insecure, or --tls-cert without --tls-ca)',
        },
      });
      return;
    }
    res.type('application/x-pem-file').send(deps.clusterCa);
  });
  app.use(securityHeaders);
  if (deps.dashboardDir) {
    app.use(express.static(deps.dashboardDir, { index: 'index.html' }));
    app.use('/vendor/yaml', express.static(yamlBrowserDir()));
  }

  const auth = requireToken(deps.tokens);
  app.get('/metrics', auth, async (_req, res) => {
    refreshGauges(deps);
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  const api = express.Router();
  api.use(auth, requireJson, express.json({ limit: '1mb', type: () => true, strict: false }));
  api.use((req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') answerOnceDurable(res, deps);
    next();
  });
  api.use(
    '/nodes',
    nodeRoutes(
      deps.store,
      deps.liveness,
      deps.allocations,
      deps.removeNode,
      deps.nodeOperations,
      deps.history,
    ),
  );
  api.use('/jobs', jobRoutes(deps.jobs));
  api.use('/jobs', logRoutes(deps));
  api.use('/tokens', tokenRoutes(deps.tokens));
  api.use('/events', eventRoutes(deps.store));
  api.use('/stream', streamRoutes(deps.store, deps.streams, deps.tokens));
  app.use('/api', api);
  app.use(unknownRoute);
  app.use(errorHandler(deps.logger));
  return app;
}

/**
 * A change is acknowledged (201, 202, or the error that says nothing changed) only once what it committed is on
 * disk: the JSON body waits for Store.durable(), one fsync shared by every request of the moment.
 */
function answerOnceDurable(res: Response, { store, logger }: ApiDependencies): void {
  const send = res.json.bind(res);
  res.json = ((body: unknown) => {
    store.durable().then(
      () => send(body),
      (error: Error) => {
        logger.error({ err: error.message }, 'cannot make a change durable');
        res.status(500);
        send({ error: { code: 'internal', message: 'the change could not be written to disk' } });
      },
    );
    return res;
  }) as Response['json'];
}

function refreshGauges({ store, liveness, outbox, logs, metrics }: ApiDependencies): void {
  const online = liveness.onlineCount;
  metrics.nodes.set({ status: 'online' }, online);
  metrics.nodes.set({ status: 'offline' }, store.nodes.count - online);
  metrics.instances.reset();
  for (const { status, count } of store.jobs.countByStatus()) metrics.instances.set({ status }, count);
  metrics.unackedCommands.set(outbox.unackedCount);
  metrics.logStreams.set(logs.count);
  metrics.eventLoopStalled.set(liveness.clock.totalStalledMs / 1000);
  metrics.controlLag.set(liveness.controlLag / 1000);
  const onlineNodes = store.nodes.list().filter((node) => liveness.isOnline(node.id));
  const jobNames = new Map(store.jobs.listJobs().map((job) => [job.id, job.name]));
  setFleetGauges(
    metrics,
    onlineNodes.map((node) => ({
      name: node.name,
      telemetry: liveness.latestTelemetry(node.id) ?? undefined,
    })),
    store.jobs.allInstances().flatMap((instance) =>
      instance.nodeId === null
        ? []
        : [
            {
              job: jobNames.get(instance.jobId) ?? instance.jobId,
              instance: instance.number,
              node: store.nodes.nameOf(instance.nodeId),
              restarts: instance.restarts,
            },
          ],
    ),
  );
}
