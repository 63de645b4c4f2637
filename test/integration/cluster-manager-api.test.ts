import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

describe('operator HTTP API: auth and bad input', () => {
  let cm: RunningClusterManager;
  beforeAll(async () => {
    cm = await startClusterManager();
  });
  afterAll(async () => {
    await cm.stop();
  });

  const job = { name: 'hello', image: 'edge/busybox:latest', command: ['sleep', '3600'] };

  it('serves /api/health without a token', async () => {
    const res = await cm.fetch(`${cm.url}/api/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', version: expect.any(String) });
  });

  it('answers 401 without the token or with a wrong one, on every guarded route', async () => {
    for (const path of ['/api/nodes', '/api/jobs', '/api/events', '/metrics']) {
      const none = await cm.fetch(`${cm.url}${path}`);
      expect(none.status, path).toBe(401);
      expect(await none.json()).toMatchObject({ error: { code: 'unauthorized' } });
      const wrong = await cm.fetch(`${cm.url}${path}`, { headers: { authorization: 'Bearer nope' } });
      expect(wrong.status, path).toBe(401);
    }
    const post = await cm.fetch(`${cm.url}/api/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(job),
    });
    expect(post.status).toBe(401);
    expect((await (await cm.api('/api/jobs')).json()) as unknown[]).toEqual([]);
  });

  it('answers 400 naming each bad field, and creates nothing', async () => {
    const res = await cm.api('/api/jobs', {
      method: 'POST',
      json: { name: 'Bad Name', image: '', replicas: 0, resources: { cpus: -1 }, bogus: 1 },
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; details: { path: string }[] } };
    expect(body.error.code).toBe('invalid_input');
    expect(body.error.details.map((d) => d.path)).toEqual(
      expect.arrayContaining(['name', 'image', 'replicas', 'resources.cpus']),
    );
    expect((await (await cm.api('/api/jobs')).json()) as unknown[]).toEqual([]);
  });

  it('answers 400 for broken JSON, 415 for a body that is not JSON, 413 over 1 MiB', async () => {
    const broken = await cm.api('/api/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name": "x",',
    });
    expect(broken.status).toBe(400);
    expect(await broken.json()).toMatchObject({ error: { code: 'invalid_json' } });
    const text = await cm.api('/api/jobs', {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hi',
    });
    expect(text.status).toBe(415);
    const huge = await cm.api('/api/jobs', {
      method: 'POST',
      json: { ...job, env: { BIG: 'x'.repeat(1024 * 1024 + 10) } },
    });
    expect(huge.status).toBe(413);
    const missing = await cm.api('/api/jobs', { method: 'POST' });
    expect(missing.status).toBe(400);
  });

  it('answers 404 for unknown jobs, nodes and routes', async () => {
    for (const path of ['/api/jobs/nope', '/api/nodes/nope', '/api/nothing']) {
      const res = await cm.api(path);
      expect(res.status, path).toBe(404);
      expect(await res.json()).toMatchObject({ error: { code: 'not_found' } });
    }
    expect((await cm.api('/api/jobs/nope', { method: 'DELETE' })).status).toBe(404);
    expect((await cm.api('/api/jobs/nope/replicate', { method: 'POST', json: { replicas: 2 } })).status).toBe(
      404,
    );
  });

  it('keeps a job that fits no node pending with the reason, and refuses a duplicate name with 409', async () => {
    const res = await cm.api('/api/jobs', { method: 'POST', json: job });
    expect(res.status).toBe(201);
    const created = (await res.json()) as { id: string; instances: { status: string; detail: string }[] };
    expect(created.instances).toEqual([
      expect.objectContaining({ status: 'pending', detail: 'no nodes registered' }),
    ]);
    const duplicate = await cm.api('/api/jobs', { method: 'POST', json: job });
    expect(duplicate.status).toBe(409);
    const byName = await cm.api('/api/jobs/hello');
    expect(((await byName.json()) as { id: string }).id).toBe(created.id);
    const deleted = await cm.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
    expect(deleted.status).toBe(202);
    expect((await cm.api('/api/jobs', { method: 'POST', json: job })).status).toBe(201);
  });

  it('evaluates a waiting job again when a node joins: its pending instances are placed, the trigger counted', async () => {
    const waiting = { ...job, name: 'waits-for-a-node', replicas: 2 };
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: waiting })).json()) as {
      id: string;
    };
    const evaluations = async (trigger: string) => {
      const text = await (await cm.api('/metrics')).text();
      const line = text
        .split('\n')
        .find((l) => l.startsWith(`edge_cm_evaluations_total{trigger="${trigger}"}`));
      return Number(line?.split(' ')[1] ?? 0);
    };
    expect(await evaluations('job-registered')).toBeGreaterThanOrEqual(1);
    const before = await evaluations('node-registered');
    const jobs = (await (await cm.api('/api/jobs')).json()) as { instances: { status: string }[] }[];
    const blocked = jobs.filter((j) => j.instances.some((instance) => instance.status === 'pending')).length;
    expect(blocked).toBeGreaterThanOrEqual(1);
    const node = new TestNode(cm, TestNode.info('joins-late'));
    await node.register({ token: cm.joinToken });
    const placed = await waitFor(async () => {
      const now = (await (await cm.api(`/api/jobs/${created.id}`)).json()) as {
        instances: { status: string; nodeName: string | null }[];
      };
      return now.instances.every((instance) => instance.status === 'scheduled') ? now.instances : undefined;
    }, 'both instances placed on the new node');
    expect(placed.map((instance) => instance.nodeName)).toEqual(['joins-late', 'joins-late']);
    // Each blocked job evaluated once for the one registration, though this one has two pending instances.
    expect((await evaluations('node-registered')) - before).toBe(blocked);
    await node.close();
  });

  it('shows what a node has allocated, in its view and in the list, as placements and deletes change it', async () => {
    const node = new TestNode(cm, TestNode.info('sized'));
    await node.register({ token: cm.joinToken });
    await node.connectMqtt(true);
    const nodeId = node.ack!.nodeId;
    const allocated = async () => {
      const one = (await (await cm.api(`/api/nodes/${nodeId}`)).json()) as { allocated: unknown };
      const list = (await (await cm.api('/api/nodes')).json()) as { id: string; allocated: unknown }[];
      expect(list.find((n) => n.id === nodeId)?.allocated).toEqual(one.allocated);
      return one.allocated;
    };
    expect(await allocated()).toEqual({ cpus: 0, memoryBytes: 0, gpus: 0 });
    const sized = {
      ...job,
      name: 'sized-job',
      replicas: 2,
      resources: { cpus: 0.5, memoryMB: 64 },
      constraints: { nodes: ['sized'] },
    };
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: sized })).json()) as {
      id: string;
    };
    expect(await allocated()).toEqual({ cpus: 1, memoryBytes: 128 * 1024 * 1024, gpus: 0 });
    // Scaled to one: the stopped copy's share is free once the node acked its delete.
    const scaled = await cm.api(`/api/jobs/${created.id}/replicate`, {
      method: 'POST',
      json: { replicas: 1 },
    });
    expect(scaled.status).toBe(202);
    await waitFor(
      async () =>
        JSON.stringify(await allocated()) ===
        JSON.stringify({ cpus: 0.5, memoryBytes: 64 * 1024 * 1024, gpus: 0 }),
      'half the allocation freed',
    );
    await node.close();
  });

  it('serves the dashboard without a token', async () => {
    const page = await cm.fetch(`${cm.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toContain('app.js');
    expect((await cm.fetch(`${cm.url}/app.js`)).status).toBe(200);
    // No inline script, no framing, no type sniffing: on the page and on API answers alike.
    for (const response of [page, await cm.api('/api/jobs')]) {
      expect(response.headers.get('content-security-policy')).toMatch(
        /script-src 'self'.*frame-ancestors 'none'/,
      );
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    }
  });

  it('serves events and Prometheus metrics', async () => {
    const events = (await (await cm.api('/api/events?limit=2')).json()) as { type: string }[];
    expect(events.length).toBe(2);
    const metrics = await (await cm.api('/metrics')).text();
    expect(metrics).toContain('edge_cm_http_requests_total');
  });
});
