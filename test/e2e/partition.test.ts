import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

const CUT_MS = 30_000;

/**
 * Node engine A runs in its own network namespace and reaches the cluster manager through a veth and a bridge;
 * B runs in the root namespace. Taking A's veth down is a partition: nothing is refused, packets just vanish.
 */
describe('a partitioned node engine', () => {
  let network: TestNetwork | undefined;
  let hostA: TestHost | undefined;
  let cluster: E2eCluster | undefined;

  beforeAll(async () => {
    network = TestNetwork.create();
    hostA = network.addHost(1);
    cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 4000 });
    await cluster.startClusterManager();
    await cluster.startEngine('part-a', [], { netns: hostA.namespace });
    await cluster.startEngine('part-b');
    await cluster.waitForNodes(['part-a', 'part-b']);
  });

  afterAll(async () => {
    try {
      // Healed first when a failure left it cut, so that A's node engine can shut down cleanly.
      if (hostA?.isCut) hostA.heal();
      await cluster?.stop();
    } finally {
      network?.destroy();
    }
  });

  const nodeStatus = async (name: string) => {
    const nodes = (await (await cluster!.api('/api/nodes')).json()) as { name: string; status: string }[];
    return nodes.find((node) => node.name === name)?.status;
  };

  it('keeps the cut-off copy running, replaces it elsewhere, and removes the extra copy on healing', async () => {
    const c = cluster!;
    const a = hostA!;
    const nodeA = c.nodeIds.get('part-a')!;
    const nodeB = c.nodeIds.get('part-b')!;
    const created = await c.createJob({
      name: 'part-job',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 2,
    });
    const before = await c.waitForJob(created.id, allRunning, 'both instances running');
    expect(new Set(before.instances.map((instance) => instance.nodeId))).toEqual(new Set([nodeA, nodeB]));
    const onA = before.instances.find((instance) => instance.nodeId === nodeA)!;
    const copyOnA = () =>
      containersWithLabel(`edge.node=${nodeA}`).filter(
        (container) => container.labels['edge.job'] === created.id,
      );
    expect(copyOnA().map((container) => container.state)).toEqual(['running']);
    const containerOnA = copyOnA()[0]!.id;

    const cutAt = Date.now();
    a.cut();
    await waitFor(async () => (await nodeStatus('part-a')) === 'offline', 'part-a offline', 15_000);
    const offlineMs = Date.now() - cutAt;
    const replacedOnB = (job: JobBody) =>
      allRunning(job) && job.instances.every((instance) => instance.nodeId === nodeB);
    const replaced = await c.waitForJob(created.id, replacedOnB, 'every instance running on part-b', 15_000);
    const replacedMs = Date.now() - cutAt;
    expect(replacedMs).toBeLessThan(15_000);
    const moved = replaced.instances.find((instance) => instance.number === onA.number)!;
    expect(moved.generation).toBeGreaterThan(onA.generation);

    // Cut off, A keeps running what it ran (it cannot know it was replaced): 3 copies for the moment.
    expect(copyOnA()).toMatchObject([{ id: containerOnA, state: 'running' }]);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, cutAt + CUT_MS - Date.now())));
    expect(c.engines.get('part-a')!.running).toBe(true);
    expect(copyOnA()).toMatchObject([{ id: containerOnA, state: 'running' }]);
    expect(await nodeStatus('part-a')).toBe('offline');
    expect(
      containersWithLabel(`edge.job=${created.id}`).filter((container) => container.state === 'running'),
    ).toHaveLength(3);

    const healedAt = Date.now();
    a.heal();
    await waitFor(async () => (await nodeStatus('part-a')) === 'online', 'part-a online again', 30_000);
    const onlineMs = Date.now() - healedAt;
    const settled = await waitFor(
      async () => {
        const containers = containersWithLabel(`edge.job=${created.id}`);
        const job = await c.job(created.id);
        return (
          containers.length === 2 &&
          containers.every((container) => container.state === 'running') &&
          replacedOnB(job) &&
          job
        );
      },
      'the extra copy removed from part-a and 2 copies running',
      30_000,
    );
    const settledMs = Date.now() - healedAt;
    console.log(
      `partition: offline ${offlineMs} ms and replaced ${replacedMs} ms after the cut; ` +
        `after healing: online ${onlineMs} ms, settled with no duplicates ${settledMs} ms`,
    );
    expect(copyOnA()).toEqual([]);
    expect(settled.instances.map((instance) => instance.generation)).toEqual(
      replaced.instances.map((instance) => instance.generation),
    );
    // It stays settled: nothing comes back on A, nothing moves again.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(containersWithLabel(`edge.job=${created.id}`).map((container) => container.state)).toEqual([
      'running',
      'running',
    ]);
    expect(replacedOnB(await c.job(created.id))).toBe(true);
    expect(await nodeStatus('part-a')).toBe('online');
  }, 150_000);
});
