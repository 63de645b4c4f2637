import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Command, topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  instances: { number: number; nodeId: string | null; status: string; generation: number }[];
}

/**
 * The two bugs of the old per-file status rules, through the API with nodes that speak the protocol: a scale-down
 * during a move left the moved copy running for good, and a `stopped` report before the delete ack left a row
 * that never went (and that `replicate` counted).
 */
describe('instance states through the API', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];

  async function join(name: string, autoAck: boolean): Promise<TestNode> {
    const node = await TestNode.join(cm, name, { autoAck });
    nodes.push(node);
    return node;
  }
  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as JobBody;
  const command = (node: TestNode, kind: Command['command'], jobId: string, instance: number) =>
    waitFor(
      () => node.commands.find((c) => c.command === kind && c.job.id === jobId && c.instance === instance),
      `${kind} of ${jobId}#${instance}`,
    );
  const report = (node: TestNode, jobId: string, instance: number, generation: number, status: string) =>
    node.publish(topics.jobStatus(node.ack!.nodeId), {
      job: jobId,
      instance,
      generation,
      status,
      detail: '',
      containerId: `c-${instance}-${generation}`,
      ts: Date.now(),
    });
  const ack = (node: TestNode, id: string) =>
    node.publish(topics.controlAck(node.ack!.nodeId), { id, ok: true });

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((node) => node.close()));
    await cm.stop();
  });

  it('tells an image pull in events at each quarter, not at every report', async () => {
    const node = await join('edge-pull', true);
    const job = (await (
      await cm.api('/api/jobs', { method: 'POST', json: { name: 'puller', image: 'edge/busybox:latest' } })
    ).json()) as JobBody;
    const { generation } = job.instances[0]!;
    const pulling = (percent: number) =>
      node.publish(topics.jobStatus(node.ack!.nodeId), {
        job: job.id,
        instance: 0,
        generation,
        status: 'pulling',
        detail: `pulling ${percent}% of 120 MB (image edge/busybox:latest)`,
        containerId: null,
        pull: { percent, totalBytes: 120e6 },
        ts: Date.now(),
      });
    await report(node, job.id, 0, generation, 'pulling');
    for (const percent of [3, 10, 26, 30, 49, 51, 80, 99, 100]) await pulling(percent);
    await report(node, job.id, 0, generation, 'running');
    await waitFor(async () => (await getJob(job.id)).instances[0]?.status === 'running', 'running');
    const events = (await (await cm.api(`/api/events?limit=100`)).json()) as {
      type: string;
      message: string;
    }[];
    const told = events
      .filter((event) => event.message.startsWith('puller#0'))
      .reverse()
      .map((event) => `${event.type} ${event.message}`);
    expect(told).toEqual([
      'instance.status puller#0 pulling',
      'instance.pulling puller#0 pulling 26% of 120 MB (image edge/busybox:latest)',
      'instance.pulling puller#0 pulling 51% of 120 MB (image edge/busybox:latest)',
      'instance.pulling puller#0 pulling 80% of 120 MB (image edge/busybox:latest)',
      'instance.status puller#0 running',
    ]);
  });

  it('scaling down while the highest instance is moved removes the moved copy too', async () => {
    const a = await join('edge-a', true);
    const b = await join('edge-b', true);
    const free = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'mover', image: 'edge/busybox:latest', replicas: 2 },
      })
    ).json()) as JobBody;
    for (const instance of free.instances) {
      const holder = instance.nodeId === a.ack!.nodeId ? a : b;
      await report(holder, free.id, instance.number, instance.generation, 'running');
    }
    const highest = free.instances[1]!;
    const source = highest.nodeId === a.ack!.nodeId ? a : b;
    const target = source === a ? b : a;
    const started = await cm.api(`/api/jobs/${free.id}/move`, {
      method: 'POST',
      json: { instance: 1, to: target === a ? 'edge-a' : 'edge-b' },
    });
    expect(started.status, await started.text()).toBe(202);
    const move = await command(target, 'move', free.id, 1);

    // Scaled to 1 while the move is in flight; then the target reports the moved copy running.
    expect(
      (await cm.api(`/api/jobs/${free.id}/replicate`, { method: 'POST', json: { replicas: 1 } })).status,
    ).toBe(202);
    await report(target, free.id, 1, move.generation, 'running');
    // The target is told to delete the copy it started, at the move's generation; the source its own.
    const targetDelete = await waitFor(
      () => target.commands.find((c) => c.command === 'delete' && c.job.id === free.id && c.instance === 1),
      'a delete of the moved copy on the target',
    );
    expect(targetDelete.generation).toBe(move.generation);
    await command(source, 'delete', free.id, 1);
    await waitFor(async () => (await getJob(free.id)).instances.length === 1, 'one instance left');
    expect((await getJob(free.id)).instances[0]!.number).toBe(0);
  });

  it('a stopped report that comes before the delete ack leaves no row behind, and replicate does not count it', async () => {
    const a = await join('edge-a', false);
    const created = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'stopper', image: 'edge/busybox:latest', replicas: 2 },
      })
    ).json()) as JobBody;
    for (const instance of created.instances) {
      const deploy = await command(a, 'deploy', created.id, instance.number);
      await ack(a, deploy.id);
      await report(a, created.id, instance.number, instance.generation, 'running');
    }
    expect(
      (await cm.api(`/api/jobs/${created.id}/replicate`, { method: 'POST', json: { replicas: 1 } })).status,
    ).toBe(202);
    const remove = await command(a, 'delete', created.id, 1);
    // The node stops it and says so before it acks the delete.
    await report(a, created.id, 1, created.instances[1]!.generation, 'stopped');
    await waitFor(
      async () => (await getJob(created.id)).instances[1]?.status === 'stopped',
      'stopped reported',
    );
    // Scaling back to 2 now must add a new instance: the stopped one does not count.
    expect(
      (await cm.api(`/api/jobs/${created.id}/replicate`, { method: 'POST', json: { replicas: 2 } })).status,
    ).toBe(202);
    await ack(a, remove.id);
    await waitFor(async () => {
      const job = await getJob(created.id);
      return job.instances.length === 2 && job.instances.every((i) => i.status !== 'stopped');
    }, 'the stopped row gone and a new instance in its place');
    expect((await getJob(created.id)).instances.map((i) => i.number).sort()).toEqual([0, 2]);
  });
});
