import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job, NodeView } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { ObedientNode } from '../helpers/obedient-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * `edgectl node drain` (issue 14, item 3) against a cluster manager and nodes that do what they are told: every
 * instance leaves make-before-break (the target runs it before the source is told to delete it), a job's
 * `update.maxParallel` at a time, and the node stays cordoned.
 */
describe('node drain', () => {
  let cm: RunningClusterManager;
  const nodes: ObedientNode[] = [];

  beforeAll(async () => {
    cm = await startClusterManager();
  });
  afterAll(async () => {
    await Promise.all(nodes.map((node) => node.close()));
    await cm?.stop();
  });

  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as Job;
  const getNode = async (ref: string) => (await (await cm.api(`/api/nodes/${ref}`)).json()) as NodeView;

  it('moves the 3 instances of a node away, make-before-break, one at a time, and says when it is done', async () => {
    const a = await ObedientNode.join(cm, 'drain-a');
    nodes.push(a);
    const created = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'drained', image: 'edge/busybox:latest', replicas: 3, update: { maxParallel: 1 } },
      })
    ).json()) as Job;
    await waitFor(
      async () => (await getJob(created.id)).instances.every((instance) => instance.status === 'running'),
      'three running on drain-a',
    );
    const b = await ObedientNode.join(cm, 'drain-b');
    nodes.push(b);

    const edgectl = edgectlFor(cm);
    const result = await edgectl(['node', 'drain', 'drain-a', '--wait', '--timeout', '30s']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^node drain-a draining: 3 instance\(s\) to move/);
    expect(result.stdout.trim().split('\n').at(-1)).toBe('node drain-a drained');

    const job = await getJob(created.id);
    expect(job.instances.map((instance) => [instance.number, instance.nodeId, instance.status])).toEqual([
      [0, b.nodeId, 'running'],
      [1, b.nodeId, 'running'],
      [2, b.nodeId, 'running'],
    ]);
    expect(await getNode('drain-a')).toMatchObject({ cordoned: true, draining: false });
    // Make-before-break, one at a time: each instance's delete on drain-a comes after drain-b ran it, and
    // the next move only after that.
    const moves = b.commands.filter((command) => command.command === 'move');
    const deletes = a.commands.filter((command) => command.command === 'delete');
    expect(moves.map((command) => command.instance).sort()).toEqual([0, 1, 2]);
    expect(deletes.map((command) => command.instance).sort()).toEqual([0, 1, 2]);
    for (let i = 1; i < moves.length; i++)
      expect(moves[i]!.issuedAt).toBeGreaterThanOrEqual(deletes[i - 1]!.issuedAt);
    const types = (
      (await (await cm.api('/api/events?node=drain-a&limit=50')).json()) as { type: string }[]
    ).map((event) => event.type);
    expect(types).toEqual(expect.arrayContaining(['node.draining', 'node.drained']));
  });

  it('keeps what cannot move, says why, and ends with uncordon', async () => {
    const c = await ObedientNode.join(cm, 'drain-c');
    nodes.push(c);
    const pinned = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'pinned', image: 'edge/busybox:latest', constraints: { nodes: ['drain-c'] } },
      })
    ).json()) as Job;
    await waitFor(async () => (await getJob(pinned.id)).instances[0]?.status === 'running', 'pinned running');
    const edgectl = edgectlFor(cm);
    const result = await edgectl(['node', 'drain', 'drain-c', '--wait', '--timeout', '3s']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /node drain-c not drained after 3 s: node drain-c: pinned#0 stays: cannot move/,
    );
    expect(await getNode('drain-c')).toMatchObject({ draining: true, cordoned: true });
    expect((await edgectl(['node', 'uncordon', 'drain-c'])).code).toBe(0);
    expect(await getNode('drain-c')).toMatchObject({ draining: false, cordoned: false });
    expect((await getJob(pinned.id)).instances[0]).toMatchObject({ nodeId: c.nodeId, status: 'running' });
    // Draining an unknown node is a 404 and changes nothing.
    expect((await cm.api('/api/nodes/no-such-node/drain', { method: 'POST' })).status).toBe(404);
  });
});
