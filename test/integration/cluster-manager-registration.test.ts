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
});
