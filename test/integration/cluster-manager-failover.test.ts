import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Command } from '../../shared/index.js';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  instances: { number: number; nodeId: string | null; status: string; generation: number; detail: string }[];
}

const job = { name: 'flappy', image: 'edge/busybox:latest', command: ['sleep', '3600'] };

describe('failover of lost instances', () => {
  let cm: RunningClusterManager;
  const live = new Map<string, TestNode>();

  async function join(name: string, auth?: { nodeId: string; nodeSecret: string }): Promise<TestNode> {
    const node = await TestNode.join(cm, name, { auth });
    live.set(name, node);
    return node;
  }

  /** The broker sees the connection drop without DISCONNECT and publishes the node's last will. */
  async function cut(name: string): Promise<TestNode> {
    const node = live.get(name)!;
    (node.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
    node.socket?.close();
    live.delete(name);
    await waitFor(
      async () => {
        const nodes = (await (await cm.api('/api/nodes')).json()) as { name: string; status: string }[];
        return nodes.find((n) => n.name === name)?.status === 'offline';
      },
      `${name} offline`,
      5000,
    );
    return node;
  }

  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as JobBody;
  const deployOf = (node: TestNode, jobId: string, generation: number) =>
    node.commands.find(
      (c: Command) => c.command === 'deploy' && c.job.id === jobId && c.generation === generation,
    );
  const report = (node: TestNode, jobId: string, generation: number) =>
    node.publish(topics.jobStatus(node.ack!.nodeId), {
      job: jobId,
      instance: 0,
      generation,
      status: 'running',
      detail: '',
      containerId: `c-${generation}`,
      ts: Date.now(),
    });

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all([...live.values()].map((node) => node.close()));
    live.clear();
    await cm.stop();
  });

  it('places a lost instance on another node and tells the old node to delete its copy when it returns', async () => {
    const a = await join('edge-a');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    const first = created.instances[0]!;
    expect(first.nodeId).toBe(a.ack!.nodeId);
    await waitFor(() => deployOf(a, created.id, first.generation), 'deploy to edge-a');
    await report(a, created.id, first.generation);
    const b = await join('edge-b');

    const old = await cut('edge-a');
    const replaced = await waitFor(
      async () => {
        const now = await getJob(created.id);
        return now.instances[0]?.nodeId === b.ack!.nodeId && now.instances[0];
      },
      'instance placed on edge-b',
      5000,
    );
    expect(replaced.number).toBe(0);
    expect(replaced.generation).toBeGreaterThan(first.generation);
    await waitFor(() => deployOf(b, created.id, replaced.generation), 'deploy to edge-b');

    const back = await join('edge-a', { nodeId: old.ack!.nodeId, nodeSecret: old.ack!.nodeSecret });
    const remove = await waitFor(
      () => back.commands.find((c) => c.command === 'delete' && c.job.id === created.id),
      'a delete of the old copy for edge-a',
      5000,
    );
    expect(remove).toMatchObject({ instance: 0, generation: first.generation });
    // A late report of the old generation from the old node changes nothing.
    await report(back, created.id, first.generation);
    await report(b, created.id, replaced.generation);
    await waitFor(
      async () => (await getJob(created.id)).instances[0]?.status === 'running',
      'running on edge-b',
    );
    expect((await getJob(created.id)).instances[0]!.nodeId).toBe(b.ack!.nodeId);
  });

  it('waits disconnect.replaceAfterMs before replacing, and keeps the instance if its node returns first', async () => {
    const a = await join('edge-a');
    await join('edge-b');
    const created = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: {
          ...job,
          name: 'patient',
          disconnect: { replaceAfterMs: 60_000 },
          constraints: { nodes: ['edge-a', 'edge-b'] },
        },
      })
    ).json()) as JobBody;
    const holderName = created.instances[0]!.nodeId === a.ack!.nodeId ? 'edge-a' : 'edge-b';
    const holder = live.get(holderName)!;
    await waitFor(() => deployOf(holder, created.id, created.instances[0]!.generation), 'deploy');
    await cut(holderName);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const waiting = await getJob(created.id);
    expect(waiting.instances[0]).toMatchObject({ status: 'lost', nodeId: holder.ack!.nodeId });
    const back = await join(holderName, { nodeId: holder.ack!.nodeId, nodeSecret: holder.ack!.nodeSecret });
    await back.sendTelemetry([
      { job: created.id, instance: 0, generation: created.instances[0]!.generation, status: 'running' },
    ]);
    await waitFor(
      async () => (await getJob(created.id)).instances[0]?.status === 'running',
      'running again in place',
    );
    expect((await getJob(created.id)).instances[0]!.generation).toBe(created.instances[0]!.generation);
  });

  it('limits replacements per job so that flapping nodes cause no storm', async () => {
    for (const name of ['edge-a', 'edge-b', 'edge-c']) await join(name);
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    const holderOf = async () => {
      const now = await getJob(created.id);
      const nodes = (await (await cm.api('/api/nodes')).json()) as { id: string; name: string }[];
      return {
        instance: now.instances[0]!,
        name: nodes.find((n) => n.id === now.instances[0]!.nodeId)!.name,
      };
    };
    // Two replacements in a minute are allowed (max(2, replicas)); the third waits.
    for (let round = 0; round < 2; round++) {
      const { instance, name } = await holderOf();
      const old = await cut(name);
      await waitFor(
        async () => (await getJob(created.id)).instances[0]!.generation > instance.generation,
        `replacement ${round + 1}`,
        5000,
      );
      await join(name, { nodeId: old.ack!.nodeId, nodeSecret: old.ack!.nodeSecret });
    }
    const { instance, name } = await holderOf();
    await cut(name);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect((await getJob(created.id)).instances[0]).toMatchObject({
      status: 'lost',
      generation: instance.generation,
    });
  });

  it('gives up a move whose target goes offline: the instance stays on its source', async () => {
    const a = await join('edge-a');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    const first = created.instances[0]!;
    await report(a, created.id, first.generation);
    const b = await join('edge-b');
    expect(
      (await cm.api(`/api/jobs/${created.id}/move`, { method: 'POST', json: { to: 'edge-b' } })).status,
    ).toBe(202);
    const move = await waitFor(
      () => b.commands.find((c) => c.command === 'move'),
      'the move command on edge-b',
    );
    expect(move.worker).toEqual([a.ack!.nodeId, b.ack!.nodeId]);
    const old = await cut('edge-b');
    await waitFor(async () => {
      const events = (await (await cm.api('/api/events?limit=20')).json()) as { type: string }[];
      return events.some((event) => event.type === 'move.failed');
    }, 'the move given up');
    expect((await getJob(created.id)).instances[0]).toMatchObject({
      nodeId: a.ack!.nodeId,
      generation: first.generation,
    });
    const back = await join('edge-b', { nodeId: old.ack!.nodeId, nodeSecret: old.ack!.nodeSecret });
    const remove = await waitFor(
      () => back.commands.find((c) => c.command === 'delete'),
      'a delete for the target',
    );
    expect(remove.generation).toBe(move.generation);
  });

  it('deletes a job on nodes that were offline when it was deleted, once they return', async () => {
    const a = await join('edge-a');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    await waitFor(() => deployOf(a, created.id, created.instances[0]!.generation), 'deploy');
    const old = await cut('edge-a');
    expect((await cm.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    expect(await getJob(created.id)).toMatchObject({ state: 'deleting' });
    expect((await cm.api('/api/jobs', { method: 'POST', json: job })).status).toBe(201);
    const back = await join('edge-a', { nodeId: old.ack!.nodeId, nodeSecret: old.ack!.nodeSecret });
    await waitFor(
      () => back.commands.find((c) => c.command === 'delete' && c.job.id === created.id),
      'the delete',
    );
    await waitFor(
      async () => (await cm.api(`/api/jobs/${created.id}`)).status === 404,
      'the job gone after the ack',
    );
  });

  it('rides out a link that drops and comes straight back: no offline, no replacement', async () => {
    const a = await join('edge-a');
    await join('edge-b');
    const created = (await (
      await cm.api('/api/jobs', { method: 'POST', json: { ...job, constraints: { nodes: ['edge-a'] } } })
    ).json()) as JobBody;
    await report(a, created.id, created.instances[0]!.generation);
    (a.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
    a.socket?.close();
    live.delete('edge-a');
    await join('edge-a', { nodeId: a.ack!.nodeId, nodeSecret: a.ack!.nodeSecret });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const events = (await (await cm.api('/api/events?limit=50')).json()) as { type: string }[];
    expect(events.map((event) => event.type)).not.toContain('node.offline');
    expect((await getJob(created.id)).instances[0]).toMatchObject({
      nodeId: a.ack!.nodeId,
      generation: created.instances[0]!.generation,
    });
  });

  it('sends an instance again to a node whose telemetry keeps missing it (its state was wiped)', async () => {
    const a = await join('edge-a');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    const generation = created.instances[0]!.generation;
    const first = await waitFor(() => deployOf(a, created.id, generation), 'the first deploy');
    await report(a, created.id, generation);
    const listed = [{ job: created.id, instance: 0, generation, status: 'running' as const }];
    await a.sendTelemetry(listed);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(a.commands.filter((c) => c.command === 'deploy')).toHaveLength(1);
    // From now on the node no longer lists it, for longer than the grace.
    const started = Date.now();
    const again = await waitFor(
      async () => {
        await a.sendTelemetry([]);
        return a.commands.find((c) => c.command === 'deploy' && c.id !== first.id);
      },
      'the instance sent again',
      20_000,
      1000,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_000);
    expect(again).toMatchObject({ instance: 0, generation });
    const events = (await (await cm.api('/api/events?limit=20')).json()) as { type: string }[];
    expect(events.map((event) => event.type)).toContain('instance.redeployed');
  });
});
