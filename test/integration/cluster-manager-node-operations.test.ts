import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeView } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  instances: { number: number; nodeId: string | null; status: string; detail: string }[];
}

/**
 * An operator's say over a node at run time (issue 14, item 3): cordon and uncordon, labels set and removed,
 * through the API and edgectl, against a cluster manager and nodes that speak the protocol.
 */
describe('node cordon and labels', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];
  let a: TestNode;
  let b: TestNode;

  beforeAll(async () => {
    cm = await startClusterManager();
    a = await TestNode.join(cm, 'edge-a');
    b = await TestNode.join(cm, 'edge-b');
    nodes.push(a, b);
  });

  afterAll(async () => {
    await Promise.all(nodes.map((node) => node.close()));
    await cm?.stop();
  });

  const post = async (json: unknown) =>
    (await (await cm.api('/api/jobs', { method: 'POST', json })).json()) as JobBody;
  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as JobBody;
  const getNode = async (name: string) => (await (await cm.api(`/api/nodes/${name}`)).json()) as NodeView;
  const events = async () =>
    (await (await cm.api('/api/events?limit=100')).json()) as { type: string; message: string }[];

  it('places nothing new on a cordoned node, says so in the pending reason, and places it once uncordoned', async () => {
    const cordoned = await cm.api('/api/nodes/edge-a/cordon', { method: 'POST' });
    expect(cordoned.status).toBe(200);
    expect(await cordoned.json()).toMatchObject({ name: 'edge-a', cordoned: true, status: 'online' });

    const spread = await post({ name: 'spread', image: 'edge/busybox:latest', replicas: 2 });
    expect(spread.instances.map((instance) => instance.nodeId)).toEqual([b.ack!.nodeId, b.ack!.nodeId]);

    const pinned = await post({
      name: 'pinned',
      image: 'edge/busybox:latest',
      constraints: { nodes: ['edge-a'] },
    });
    expect(pinned.instances[0]).toMatchObject({ status: 'pending', nodeId: null });
    expect(pinned.instances[0]!.detail).toContain('edge-a: cordoned');

    // Cordoning again changes nothing and says nothing.
    expect((await cm.api('/api/nodes/edge-a/cordon', { method: 'POST' })).status).toBe(200);
    expect((await events()).filter((event) => event.type === 'node.cordoned')).toHaveLength(1);

    const uncordoned = await cm.api(`/api/nodes/${a.ack!.nodeId}/uncordon`, { method: 'POST' });
    expect(await uncordoned.json()).toMatchObject({ name: 'edge-a', cordoned: false });
    const placed = await waitFor(
      async () => (await getJob(pinned.id)).instances.find((instance) => instance.nodeId === a.ack!.nodeId),
      'the pinned instance placed on edge-a',
    );
    expect(placed.status).toBe('scheduled');
    // What ran on the cordoned node stayed: nothing was moved or stopped by the cordon.
    expect((await getJob(spread.id)).instances.map((instance) => instance.status)).toEqual([
      'scheduled',
      'scheduled',
    ]);
    expect((await events()).map((event) => event.type)).toEqual(
      expect.arrayContaining(['node.cordoned', 'node.uncordoned']),
    );
  });

  it('sets and removes labels over those the node announces, kept across its registrations', async () => {
    const waiting = await post({
      name: 'zoned',
      image: 'edge/busybox:latest',
      constraints: { labels: { zone: 'north' } },
    });
    expect(waiting.instances[0]).toMatchObject({ status: 'pending' });

    const labelled = await cm.api('/api/nodes/edge-b/labels', { method: 'PATCH', json: { zone: 'north' } });
    expect(labelled.status).toBe(200);
    expect(await labelled.json()).toMatchObject({
      labels: { zone: 'north' },
      operatorLabels: { zone: 'north' },
    });
    await waitFor(
      async () => (await getJob(waiting.id)).instances[0]?.nodeId === b.ack!.nodeId,
      'the zoned instance placed on edge-b once it has the label',
    );
    const filtered = (await (await cm.api('/api/nodes?label=zone=north')).json()) as NodeView[];
    expect(filtered.map((node) => node.name)).toEqual(['edge-b']);

    // The node registers again announcing its own labels: the operator's stay over them.
    await b.register(
      { nodeId: b.ack!.nodeId, nodeSecret: b.ack!.nodeSecret },
      TestNode.info('edge-b', { labels: { zone: 'south', rack: '7' } }),
    );
    expect((await getNode('edge-b')).labels).toEqual({ zone: 'north', rack: '7' });

    // `rack-` removes even a label the node announces; a value given again sets it.
    const edgectl = edgectlFor(cm);
    const removed = await edgectl(['node', 'label', 'edge-b', 'rack-', 'tier=edge']);
    expect(removed).toMatchObject({ code: 0, stdout: 'node edge-b labels: zone=north, tier=edge\n' });
    expect((await getNode('edge-b')).operatorLabels).toEqual({ zone: 'north', rack: null, tier: 'edge' });
    expect((await events()).some((event) => event.message === 'node edge-b labels: rack-, tier=edge')).toBe(
      true,
    );
  });

  it('takes cordon and uncordon from edgectl, and shows a cordoned node in the table', async () => {
    const edgectl = edgectlFor(cm);
    expect(await edgectl(['node', 'cordon', 'edge-b'])).toMatchObject({
      code: 0,
      stdout: 'node edge-b cordoned: no new instances there (what runs there stays)\n',
    });
    const table = await edgectl(['nodes']);
    expect(table.stdout).toMatch(/edge-b\s+\S+\s+online,cordoned\s/);
    expect((await edgectl(['node', 'uncordon', 'edge-b'])).stdout).toBe(
      'node edge-b uncordoned: it takes new instances\n',
    );
    expect((await edgectl(['node', 'label', 'edge-b', 'oops'])).code).not.toBe(0);
  });

  it('refuses bad label changes and unknown nodes, and changes nothing', async () => {
    const before = await getNode('edge-a');
    for (const json of [{}, { zone: 5 }, ['zone'], { '': 'x' }, 'zone=x']) {
      const res = await cm.api('/api/nodes/edge-a/labels', { method: 'PATCH', json });
      expect(res.status, JSON.stringify(json)).toBe(400);
    }
    const text = await cm.api('/api/nodes/edge-a/labels', {
      method: 'PATCH',
      body: 'zone=x',
      headers: { 'content-type': 'text/plain' },
    });
    expect(text.status).toBe(415);
    expect((await cm.api('/api/nodes/nope/cordon', { method: 'POST' })).status).toBe(404);
    expect((await cm.api('/api/nodes/nope/labels', { method: 'PATCH', json: { a: 'b' } })).status).toBe(404);
    const after = await getNode('edge-a');
    expect({ labels: after.labels, operatorLabels: after.operatorLabels, cordoned: after.cordoned }).toEqual({
      labels: before.labels,
      operatorLabels: before.operatorLabels,
      cordoned: before.cordoned,
    });
  });

  it('keeps cordon and labels across a restart of the cluster manager', async () => {
    expect((await cm.api('/api/nodes/edge-a/cordon', { method: 'POST' })).status).toBe(200);
    await Promise.all(nodes.splice(0).map((node) => node.close()));
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir: cm.dataDir });
    expect(await getNode('edge-a')).toMatchObject({ cordoned: true });
    expect((await getNode('edge-b')).labels).toEqual({ zone: 'north', tier: 'edge' });
  });
});
