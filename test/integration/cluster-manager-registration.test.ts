import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';

describe('node registration over Socket.IO /init', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];
  const node = (name: string) => {
    const created = new TestNode(cm, TestNode.info(name));
    nodes.push(created);
    return created;
  };

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm.stop();
  });

  it('registers a node with the join token and hands out its identity and MQTT login', async () => {
    const ack = await node('edge-a').register({ token: cm.joinToken });
    expect(ack).toMatchObject({
      nodeId: expect.any(String),
      nodeSecret: expect.any(String),
      telemetryIntervalMs: 2000,
    });
    if (!('nodeId' in ack)) throw new Error('expected a node id');
    expect(ack.mqtt.url).toBe(cm.mqttUrl);
    expect(ack.mqtt.username).toBe(ack.nodeId);
    const listed = (await (await cm.api('/api/nodes')).json()) as {
      id: string;
      name: string;
      status: string;
    }[];
    expect(listed).toEqual([expect.objectContaining({ id: ack.nodeId, name: 'edge-a', status: 'online' })]);
  });

  it('registers one node per connection: a second name on it is refused and nothing is added', async () => {
    const first = node('edge-a');
    const ack = await first.register({ token: cm.joinToken });
    if (!('nodeId' in ack)) throw new Error('expected a node id');
    const emit = (name: string) =>
      new Promise<{ error?: { code: string; message: string }; nodeId?: string }>((resolve) =>
        first.socket!.emit('register', TestNode.info(name), resolve),
      );
    const second = await emit('edge-b');
    expect(second.error).toMatchObject({
      code: 'conflict',
      message: expect.stringContaining('one connection'),
    });
    // The node it registered may register again on it (what it announces changed): same id.
    expect((await emit('edge-a')).nodeId).toBe(ack.nodeId);
    const listed = (await (await cm.api('/api/nodes')).json()) as { name: string }[];
    expect(listed.map((n) => n.name)).toEqual(['edge-a']);
  });

  it('refuses a bad join token at connect time with "unauthorized"', async () => {
    await expect(node('edge-b').register({ token: 'wrong' })).rejects.toThrow('unauthorized');
    await expect(node('edge-b').register({})).rejects.toThrow('unauthorized');
    await expect(node('edge-b').register({ nodeId: 'nope', nodeSecret: 'nope' })).rejects.toThrow(
      'unauthorized',
    );
    const listed = (await (await cm.api('/api/nodes')).json()) as unknown[];
    expect(listed).toEqual([]);
  });

  it('keeps the node id when a node registers again with its id and secret', async () => {
    const first = await node('edge-c').register({ token: cm.joinToken });
    if (!('nodeId' in first)) throw new Error('expected a node id');
    const again = await node('edge-c').register({ nodeId: first.nodeId, nodeSecret: first.nodeSecret });
    expect(again).toMatchObject({ nodeId: first.nodeId, nodeSecret: first.nodeSecret });
    await expect(node('edge-c').register({ nodeId: first.nodeId, nodeSecret: 'stolen' })).rejects.toThrow(
      'unauthorized',
    );
    const listed = (await (await cm.api('/api/nodes')).json()) as unknown[];
    expect(listed).toHaveLength(1);
  });

  it('answers invalid node info with an error naming the fields, and registers nothing', async () => {
    const ack = await node('edge-d').register(
      { token: cm.joinToken },
      { name: 'edge-d', arch: 'sparc', cpus: -1 },
    );
    expect(ack).toMatchObject({ error: { code: 'invalid_input' } });
    if (!('error' in ack)) throw new Error('expected an error');
    const paths = ack.error.details?.map((d) => d.path) ?? [];
    expect(paths).toEqual(expect.arrayContaining(['arch', 'cpus', 'os', 'memoryBytes']));
    expect((await (await cm.api('/api/nodes')).json()) as unknown[]).toEqual([]);
  });

  it('refuses a second online node under a taken name', async () => {
    await node('edge-e').register({ token: cm.joinToken });
    const ack = await node('edge-e').register({ token: cm.joinToken });
    expect(ack).toMatchObject({ error: { code: 'conflict' } });
  });

  it("refuses another node's name with the join token, online or not, and changes nothing", async () => {
    const owner = node('edge-f');
    const secret = 'a'.repeat(40);
    const first = await owner.register({ token: cm.joinToken, nodeSecret: secret });
    if (!('nodeId' in first)) throw new Error('expected a node id');
    expect(first.nodeSecret).toBe(secret); // the node's own secret, kept
    await owner.close();
    await cm.manager.store.durable();
    cm.manager['liveness'].markOffline(first.nodeId, 'test');
    const before = cm.manager.store.nodes.get(first.nodeId);
    // An offline node's name, with the join token and no secret, or another secret: refused.
    for (const auth of [{ token: cm.joinToken }, { token: cm.joinToken, nodeSecret: 'b'.repeat(40) }]) {
      const ack = await node('edge-f').register(auth);
      expect(ack).toMatchObject({
        error: { code: 'conflict', message: expect.stringContaining('edgectl node remove edge-f') },
      });
    }
    expect(cm.manager.store.nodes.get(first.nodeId)).toEqual(before);
    expect(cm.manager.store.nodes.count).toBe(1);
    // Its own secret: the same node whose answer was lost, back under its id.
    const again = await node('edge-f').register({ token: cm.joinToken, nodeSecret: secret });
    expect(again).toMatchObject({ nodeId: first.nodeId, nodeSecret: secret });
  });
});

describe('registration rate per source address', () => {
  it('refuses connections over the rate with "rate limited" before looking at the token, and stores nothing', async () => {
    // 1 a second, bursts of 10: the eleventh attempt in a row is over.
    const cm = await startClusterManager({ registrationRatePerS: 1 });
    try {
      const answers: string[] = [];
      for (let attempt = 0; attempt < 12; attempt++) {
        const node = new TestNode(cm, TestNode.info(`rate-${attempt}`));
        answers.push(
          await node.register({ token: attempt < 9 ? 'wrong' : cm.joinToken }).then(
            () => 'registered',
            (error: Error) => error.message,
          ),
        );
        await node.close();
      }
      expect(answers.slice(0, 9)).toEqual(Array(9).fill('unauthorized'));
      expect(answers[9]).toBe('registered');
      expect(answers.slice(10)).toEqual(['rate limited', 'rate limited']);
      expect(cm.manager.store.nodes.count).toBe(1);
    } finally {
      await cm.stop();
    }
  });
});
