import mqtt from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hashSecret } from '../../cluster-manager/secrets.js';
import { parseJoinToken } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';

/**
 * Named tokens with a role: each refusal tried for real against the API, the broker and `/init`, and checked
 * to have changed nothing.
 */
describe('tokens and roles', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];
  const as = (token: string, path: string, init: RequestInit & { json?: unknown } = {}) =>
    cm.api(path, { ...init, headers: { authorization: `Bearer ${token}` } });
  const create = async (name: string, role: string, ttlSeconds?: number) => {
    const response = await cm.api('/api/tokens', { method: 'POST', json: { name, role, ttlSeconds } });
    expect(response.status).toBe(201);
    return (await response.json()) as { name: string; role: string; token: string; expiresAt: number | null };
  };
  const job = { name: 'tok-job', image: 'edge/busybox:latest', command: ['sleep', '1'] };

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((node) => node.close()));
    await cm.stop();
  });

  it('a read-only token reads, and is refused every change with 403, which changes nothing', async () => {
    const readOnly = (await create('viewer', 'read-only')).token;
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as {
      id: string;
    };
    expect((await as(readOnly, '/api/jobs')).status).toBe(200);
    expect((await as(readOnly, '/metrics')).status).toBe(200);
    const refused = await as(readOnly, `/api/jobs/${created.id}`, { method: 'DELETE' });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({
      error: { code: 'forbidden', message: expect.stringContaining('read-only token may not DELETE') },
    });
    expect(await (await cm.api(`/api/jobs/${created.id}`)).json()).toMatchObject({ state: 'active' });
    expect((await as(readOnly, '/api/jobs', { method: 'POST', json: { ...job, name: 'x' } })).status).toBe(
      403,
    );
    expect((await as(readOnly, '/api/tokens')).status).toBe(403);
    expect((await cm.api('/api/jobs')).status).toBe(200);
    expect(((await (await cm.api('/api/jobs')).json()) as unknown[]).length).toBe(1);
  });

  it('a deployer changes jobs and nothing else; a join token opens no API route', async () => {
    const deployer = (await create('ci', 'deployer')).token;
    const node = await TestNode.join(cm, 'tok-node');
    nodes.push(node);
    const posted = await as(deployer, '/api/jobs', { method: 'POST', json: job });
    expect(posted.status).toBe(201);
    const { id } = (await posted.json()) as { id: string };
    expect((await as(deployer, `/api/jobs/${id}`, { method: 'DELETE' })).status).toBe(202);
    expect((await as(deployer, `/api/nodes/${node.ack!.nodeId}`, { method: 'DELETE' })).status).toBe(403);
    expect(cm.manager.store.nodes.get(node.ack!.nodeId)).toBeDefined();
    expect((await as(deployer, '/api/tokens', { method: 'POST', json: { name: 'mine' } })).status).toBe(403);
    expect(cm.manager.store.tokens.get('mine')).toBeUndefined();
    expect((await as(cm.joinToken, '/api/jobs')).status).toBe(403);
    expect((await as('no-such-token', '/api/jobs')).status).toBe(401);
  });

  it('join tokens: a named one pins the CA and joins; revoked or expired it is refused; the default keeps working', async () => {
    const siteA = await create('site-a', 'join', 3600);
    expect(siteA.expiresAt).toBeGreaterThan(Date.now() + 3500_000);
    expect(parseJoinToken(siteA.token).caFingerprint).toBe(parseJoinToken(cm.joinToken).caFingerprint);
    const first = await TestNode.join({ ...cm, joinToken: siteA.token }, 'site-a-1');
    nodes.push(first);

    const revoked = await cm.api('/api/tokens/site-a', { method: 'DELETE' });
    expect(await revoked.json()).toMatchObject({ name: 'site-a', state: 'revoked' });
    const late = new TestNode(cm, TestNode.info('site-a-2'));
    nodes.push(late);
    await expect(late.register({ token: siteA.token })).rejects.toThrow('unauthorized');
    // A node that joined with it stays: it registers with its own identity.
    const again = new TestNode(cm, TestNode.info('site-a-1'));
    nodes.push(again);
    expect(
      await again.register({ nodeId: first.ack!.nodeId, nodeSecret: first.ack!.nodeSecret }),
    ).toMatchObject({
      nodeId: first.ack!.nodeId,
    });

    // Expired: a token whose time is up (written as the store keeps it) opens nothing.
    const secret = 'expired-join-secret-'.padEnd(40, 'e');
    cm.manager.store.tokens.upsert({
      name: 'old',
      role: 'join',
      secretHash: hashSecret(secret),
      createdAt: Date.now() - 7200_000,
      expiresAt: Date.now() - 1,
      revokedAt: null,
    });
    const expired = new TestNode(cm, TestNode.info('too-late'));
    nodes.push(expired);
    await expect(expired.register({ token: secret })).rejects.toThrow('unauthorized');
    expect(cm.manager.store.nodes.findByName('too-late')).toBeUndefined();
    nodes.push(await TestNode.join(cm, 'default-still-works'));
    const listed = (await (await cm.api('/api/tokens')).json()) as Record<string, unknown>[];
    // Oldest first.
    expect(listed.map((token) => [token.name, token.role, token.state])).toEqual([
      ['old', 'join', 'expired'],
      ['default-admin', 'admin', 'valid'],
      ['default-join', 'join', 'valid'],
      ['telemetry', 'read-only', 'valid'],
      ['site-a', 'join', 'revoked'],
    ]);
    expect(JSON.stringify(listed)).not.toMatch(/secret|hash|E10/i);
  });

  it('MQTT: only read-only tokens log in as operator; the admin token does not', async () => {
    const login = (password: string) =>
      mqtt.connectAsync(cm.mqttUrl, {
        protocolVersion: 4,
        username: 'operator',
        password,
        ca: cm.ca,
        reconnectPeriod: 0,
      });
    await expect(login(cm.apiToken)).rejects.toThrow(/Bad username or password|Not authorized/i);
    await expect(login((await create('deploys', 'deployer')).token)).rejects.toThrow(
      /Bad username or password/i,
    );
    for (const password of [cm.telemetryToken, (await create('grafana', 'read-only')).token]) {
      const client = await login(password);
      expect(client.connected).toBe(true);
      await client.endAsync(true);
    }
  });

  it('edgectl token create, list and revoke; a revoked default stays revoked across a restart', async () => {
    const edgectl = edgectlFor(cm);
    const created = await edgectl(['token', 'create', 'lab', '--ttl', '24h']);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/^E10[0-9a-f]{64}::\S+\n$/);
    expect(created.stderr).toMatch(/join token lab created, valid until/);
    const listed = await edgectl(['token', 'list']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/lab\s+join\s+valid/);
    expect((await edgectl(['token', 'create', 'x', '--ttl', 'soon'])).code).toBe(2);
    expect((await edgectl(['token', 'revoke', 'default-join'])).code).toBe(0);

    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir: cm.dataDir });
    const refused = new TestNode(cm, TestNode.info('after-restart'));
    nodes.push(refused);
    await expect(refused.register({ token: cm.joinToken })).rejects.toThrow('unauthorized');
  });
});
