import { rmSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  instances: { number: number; nodeId: string | null; status: string; generation: number; detail: string }[];
}

/** A failed instance is placed again per its job's reschedule policy, on another node where one fits. */
describe('rescheduling failed instances', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];

  /** A node that acks nothing by itself (see refuseEverything). */
  async function join(name: string, auth?: { nodeId: string; nodeSecret: string }): Promise<TestNode> {
    const node = await TestNode.join(cm, name, { autoAck: false, auth });
    nodes.push(node);
    return node;
  }
  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as JobBody;
  const postJob = async (spec: Record<string, unknown>) =>
    (await (
      await cm.api('/api/jobs', { method: 'POST', json: { image: 'edge/busybox:latest', ...spec } })
    ).json()) as JobBody;
  /** Waits until the job's instance 0 failed again after `reschedules` reschedules (each a new generation). */
  const failedAfter = (created: JobBody, reschedules: number) =>
    waitFor(
      async () => {
        const instance = (await getJob(created.id)).instances[0]!;
        return (
          instance.status === 'failed' &&
          instance.generation === created.instances[0]!.generation + reschedules
        );
      },
      `${reschedules} reschedules used up`,
      10_000,
    );
  const refuseEverything = (node: TestNode) =>
    setInterval(() => {
      for (const command of node.commands.splice(0))
        void node.publish(topics.controlAck(node.ack!.nodeId), {
          id: command.id,
          ok: command.command === 'delete',
          ...(command.command === 'delete' ? {} : { error: { code: 'no_space', message: 'disk full' } }),
        });
    }, 20);

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((node) => node.close()));
    await cm.stop();
  });

  it('places an instance refused by its node on another node, and tells the first to remove it', async () => {
    const a = await join('edge-a');
    const created = await postJob({
      name: 'phoenix',
      reschedule: { attempts: 2, delayMs: 100, intervalMs: 60_000 },
    });
    expect(created.instances[0]!.nodeId).toBe(a.ack!.nodeId);
    const refusing = refuseEverything(a);
    try {
      await waitFor(
        async () => (await getJob(created.id)).instances[0]!.status === 'failed',
        'failed on edge-a',
      );
      const b = await join('edge-b');
      const moved = await waitFor(
        async () => {
          const instance = (await getJob(created.id)).instances[0]!;
          return instance.nodeId === b.ack!.nodeId && instance;
        },
        'placed again on edge-b',
        5000,
      );
      expect(moved.status).toBe('scheduled');
      expect(moved.generation).toBeGreaterThan(created.instances[0]!.generation);
      expect(moved.detail).toMatch(/rescheduled after failing on edge-a/);
      const events = (await (await cm.api('/api/events?type=instance.rescheduled')).json()) as {
        message: string;
      }[];
      expect(events[0]!.message).toMatch(
        /phoenix#0 failed on edge-a: placed again \(attempt 1 of 2 in the interval\)/,
      );
    } finally {
      clearInterval(refusing);
    }
  });

  it('stops after the attempts of the policy, and never reschedules restart: never', async () => {
    const a = await join('edge-a');
    const refusing = refuseEverything(a);
    try {
      const limited = await postJob({
        name: 'limited',
        reschedule: { attempts: 2, delayMs: 50, intervalMs: 60_000 },
      });
      const never = await postJob({ name: 'never', restart: { policy: 'never' } });
      // On the only node: the first failure and two reschedules (generations +2), then it stays failed.
      await failedAfter(limited, 2);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const after = (await getJob(limited.id)).instances[0]!;
      expect(after).toMatchObject({ status: 'failed', generation: limited.instances[0]!.generation + 2 });
      expect((await getJob(never.id)).instances[0]).toMatchObject({
        status: 'failed',
        generation: never.instances[0]!.generation,
      });
    } finally {
      clearInterval(refusing);
    }
  });

  it('keeps the attempts used across a restart of the cluster manager: no fresh attempts after it', async () => {
    const a = await join('edge-a');
    let refusing = refuseEverything(a);
    try {
      const created = await postJob({
        name: 'crashy',
        reschedule: { attempts: 2, delayMs: 50, intervalMs: 600_000 },
      });
      const first = created.instances[0]!.generation;
      await failedAfter(created, 2);
      clearInterval(refusing);
      await Promise.all(nodes.splice(0).map((node) => node.close()));
      const dataDir = cm.dataDir;
      await cm.stop({ keepData: true });
      cm = await startClusterManager({ dataDir });
      // The same node comes back (its identity kept) and still refuses everything it is sent.
      const back = await join('edge-a', { nodeId: a.ack!.nodeId, nodeSecret: a.ack!.nodeSecret });
      refusing = refuseEverything(back);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      expect((await getJob(created.id)).instances[0]).toMatchObject({
        status: 'failed',
        generation: first + 2,
      });
      clearInterval(refusing);
      // This cluster manager's data dir is the test's to remove; afterEach stops a fresh one.
      await Promise.all(nodes.splice(0).map((node) => node.close()));
      await cm.stop();
      rmSync(dataDir, { recursive: true, force: true });
      cm = await startClusterManager();
    } finally {
      clearInterval(refusing);
    }
  });

  it('refuses a reschedule policy that makes no sense, changing nothing', async () => {
    for (const reschedule of [{ attempts: -1 }, { delayMs: 5000, maxDelayMs: 10 }, { sometimes: true }]) {
      const response = await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'bad', image: 'edge/busybox:latest', reschedule },
      });
      expect(response.status).toBe(400);
    }
    expect(await (await cm.api('/api/jobs')).json()).toEqual([]);
  });
});
