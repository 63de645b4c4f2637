import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiDependencies, createApi } from '../../cluster-manager/api/app.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';

interface OpenApiOperation {
  responses: Record<string, { content?: Record<string, unknown> }>;
  parameters?: { name: string; in: string }[];
}
type OpenApiDocument = { paths: Record<string, Record<string, OpenApiOperation>> };

/** What express answers for: `METHOD /path/{param}`, from the router of the app createApi builds. */
function routesOf(router: RouterLike, prefix = ''): string[] {
  return router.listRoutes().flatMap(({ path, methods, router: mounted }) => {
    const full = `${prefix}${path}`.replace(/\/+$/, '');
    if (mounted) return routesOf(mounted, full);
    const openApiPath = full.replace(/:(\w+)/g, '{$1}');
    return (methods ?? []).filter((method) => method !== 'HEAD').map((method) => `${method} ${openApiPath}`);
  });
}
interface RouterLike {
  listRoutes(): { path: string; methods?: string[]; router?: RouterLike }[];
}

/**
 * What each documented operation is called with here (the job, node and token it names exist by then); an
 * operation with no entry is called with `no-such-thing` for each parameter and must still be answered as the
 * route it is.
 */
const SAMPLES: Record<string, { params?: Record<string, string>; query?: string; body?: unknown }> = {
  'POST /api/jobs': { body: { name: 'oa-job', image: 'edge/busybox:latest' } },
  'GET /api/jobs/{id}': { params: { id: 'oa-job' } },
  'POST /api/jobs/{id}/replicate': { params: { id: 'oa-job' }, body: { replicas: 2 } },
  'POST /api/jobs/{id}/move': { params: { id: 'oa-job' }, body: { instance: 0 } },
  'DELETE /api/jobs/{id}': { params: { id: 'oa-job' } },
  'GET /api/nodes/{id}': { params: { id: 'oa-node' } },
  'POST /api/nodes/{id}/cordon': { params: { id: 'oa-node' } },
  'POST /api/nodes/{id}/uncordon': { params: { id: 'oa-node' } },
  'PATCH /api/nodes/{id}/labels': { params: { id: 'oa-node' }, body: { zone: 'north' } },
  'DELETE /api/nodes/{id}': { params: { id: 'oa-node' } },
  'POST /api/tokens': { body: { name: 'oa-token', role: 'read-only' } },
  'DELETE /api/tokens/{name}': { params: { name: 'oa-token' } },
  'GET /api/events': { query: '?limit=5&job=oa-job' },
  'GET /api/stream': { query: '?kinds=event' },
};

/** Changes first (so that reads find something), removals last; shorter paths (the collection) first. */
const ORDER = ['post', 'patch', 'put', 'get', 'delete'];

/** `/api/openapi.json` (issue 14, item 6): a valid OpenAPI 3.1 document, and every route in it answered. */
describe('the OpenAPI document', () => {
  let cm: RunningClusterManager;
  let nodes: TestNode[];
  let document: OpenApiDocument;

  beforeAll(async () => {
    cm = await startClusterManager();
    // Two: an instance can move from one to the other.
    nodes = [await TestNode.join(cm, 'oa-node'), await TestNode.join(cm, 'oa-other')];
    // Public: it describes the API, it holds no data of the cluster.
    const answer = await cm.fetch(`${cm.url}/api/openapi.json`);
    expect(answer.status).toBe(200);
    document = (await answer.json()) as OpenApiDocument;
  });

  afterAll(async () => {
    for (const node of nodes ?? []) await node.close();
    await cm?.stop();
  });

  it('is valid OpenAPI 3.1, and every schema in it compiles as JSON Schema 2020-12', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(document) as Record<string, unknown>);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    const ajv = new Ajv2020({ strict: false });
    ajv.addSchema(document, 'openapi.json');
    for (const [path, operations] of Object.entries(document.paths))
      for (const [method, operation] of Object.entries(operations))
        for (const [status, response] of Object.entries(operation.responses))
          for (const media of Object.keys(response.content ?? {}))
            expect(
              ajv.getSchema(pointer(path, method, status, media)),
              `${method} ${path} ${status}`,
            ).toBeTypeOf('function');
  });

  it('lists every route of the app, and no route the app does not have', () => {
    const app = createApi({} as ApiDependencies);
    const routes = routesOf(app.router as unknown as RouterLike).sort();
    const documented = Object.entries(document.paths)
      .flatMap(([path, operations]) =>
        Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`),
      )
      .sort();
    expect(documented).toEqual(routes);
    // Every path parameter is described.
    for (const [path, operations] of Object.entries(document.paths))
      for (const operation of Object.values(operations))
        for (const [, name] of path.matchAll(/\{(\w+)\}/g))
          expect(
            operation.parameters?.some((p) => p.in === 'path' && p.name === name),
            `${path} {${name}}`,
          ).toBe(true);
  });

  it('answers every operation as the route it is, with a body the document describes', async () => {
    const ajv = new Ajv2020({ strict: false });
    ajv.addSchema(document, 'openapi.json');
    const operations = Object.entries(document.paths)
      .flatMap(([path, byMethod]) =>
        Object.entries(byMethod).map(([method, operation]) => ({ path, method, operation })),
      )
      .sort((a, b) => ORDER.indexOf(a.method) - ORDER.indexOf(b.method) || a.path.length - b.path.length);
    const described: string[] = [];
    for (const { path, method, operation } of operations) {
      const key = `${method.toUpperCase()} ${path}`;
      const sample = SAMPLES[key] ?? {};
      const url = path.replace(/\{(\w+)\}/g, (_, name: string) =>
        encodeURIComponent(sample.params?.[name] ?? 'no-such-thing'),
      );
      const stop = new AbortController();
      const answer = await cm.api(`${url}${sample.query ?? ''}`, {
        method: method.toUpperCase(),
        ...(sample.body !== undefined ? { json: sample.body } : {}),
        signal: stop.signal,
      });
      const status = String(answer.status);
      const type = answer.headers.get('content-type')?.split(';')[0] ?? '';
      // A stream answers for as long as it is read: its headers are the answer here.
      const body = type === 'text/event-stream' ? '' : await answer.text();
      stop.abort();
      expect(answer.status, `${key}: ${body}`).not.toBe(405);
      if (answer.status === 404) expect(body, key).not.toMatch(/no route/);
      const documented = operation.responses[status] ?? operation.responses.default!;
      expect(Object.keys(documented.content ?? {}), `${key} ${status} ${type}`).toContain(type);
      if (type === 'application/json') {
        const validate = ajv.getSchema(
          pointer(path, method, operation.responses[status] ? status : 'default', type),
        )!;
        expect(validate(JSON.parse(body)) ? [] : validate.errors, `${key} ${status}: ${body}`).toEqual([]);
      }
      if (operation.responses[status] && answer.ok) described.push(key);
    }
    // The samples reach the answers that matter, not only errors.
    expect(described).toEqual(expect.arrayContaining(Object.keys(SAMPLES)));
  });
});

function pointer(path: string, method: string, status: string, media: string): string {
  const token = (part: string) => part.replace(/~/g, '~0').replace(/\//g, '~1');
  return `openapi.json#/paths/${token(path)}/${method}/responses/${status}/content/${token(media)}/schema`;
}
