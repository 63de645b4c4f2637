import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { InstanceState } from './instance-status.js';
import { formatMetrics, type NodeEngineMetrics } from './metrics.js';

/** What `GET /info` shows. */
export interface NodeEngineInfo {
  nodeId: string | null;
  name: string;
  registration: string;
  mqttConnected: boolean;
  runtimes: string[];
  overlay: boolean;
  version: string;
  clusterManager: string;
}

export interface LocalApiSources {
  info: () => NodeEngineInfo;
  instances: () => InstanceState[];
  metrics: () => NodeEngineMetrics;
}

function send(res: import('node:http').ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The local, read-only info API: `GET /info`, `GET /containers` and `GET /metrics`, on loopback only. */
export async function startLocalApi(
  sources: LocalApiSources,
  port: number,
  host = '127.0.0.1',
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET')
      return send(res, 405, { error: { code: 'method_not_allowed', message: 'GET only' } });
    if (path === '/info') return send(res, 200, sources.info());
    if (path === '/metrics') {
      const text = formatMetrics(sources.metrics());
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(text);
      return;
    }
    if (path === '/containers') {
      return send(
        res,
        200,
        sources.instances().map((state) => ({
          job: state.job,
          jobName: state.jobName,
          instance: state.instance,
          generation: state.generation,
          technology: state.technology,
          status: state.status,
          detail: state.detail,
          containerId: state.containerId,
          restarts: state.restarts,
          ...(state.startedAt !== undefined ? { startedAt: state.startedAt } : {}),
          ...(state.exitCode !== undefined ? { exitCode: state.exitCode } : {}),
        })),
      );
    }
    send(res, 404, { error: { code: 'not_found', message: `no route ${path}` } });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return { server, url: `http://${host}:${address.port}` };
}
