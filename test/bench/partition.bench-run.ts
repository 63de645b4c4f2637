import { afterAll, beforeAll, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';
import { report, timingRow } from './report.js';

const ROUNDS = Math.min(10, Math.max(1, Number(process.env.BENCH_PARTITION_ROUNDS ?? 5)));
/** How long A stays cut off at least (longer if its instance is not yet replaced by then). */
const CUT_MS = Number(process.env.BENCH_PARTITION_CUT_MS ?? 10_000);
/** The cluster manager's default: a node with no telemetry for 6 s is offline. */
const NODE_TIMEOUT_MS = 6000;

let network: TestNetwork | undefined;
let hostA: TestHost | undefined;
let cluster: E2eCluster | undefined;

beforeAll(async () => {
  network = TestNetwork.create();
  hostA = network.addHost(1);
  cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: NODE_TIMEOUT_MS });
  await cluster.startClusterManager();
  await cluster.startEngine('bench-part-a', [], { netns: hostA.namespace });
  await cluster.startEngine('bench-part-b');
  await cluster.waitForNodes(['bench-part-a', 'bench-part-b']);
});

afterAll(async () => {
  try {
    await cluster?.stop();
  } finally {
    network?.destroy();
  }
});

async function nodeOnline(name: string): Promise<boolean> {
  const nodes = (await (await cluster!.api('/api/nodes')).json()) as { name: string; status: string }[];
  return nodes.some((node) => node.name === name && node.status === 'online');
}

/** One round: a fresh 2-replica job (one copy per node), A cut off until replaced, then healed. */
async function round(index: number) {
  const c = cluster!;
  const nodeA = c.nodeIds.get('bench-part-a')!;
  const nodeB = c.nodeIds.get('bench-part-b')!;
  const created = await c.createJob({
    name: `bench-part-${index}`,
    image: 'edge/busybox:latest',
    command: WORKLOAD,
    replicas: 2,
  });
  const before = await c.waitForJob(created.id, allRunning, 'both instances running');
  if (!before.instances.some((instance) => instance.nodeId === nodeA))
    throw new Error('no instance was placed on bench-part-a');
  const onB = (job: JobBody) =>
    allRunning(job) && job.instances.every((instance) => instance.nodeId === nodeB);

  const cutAt = performance.now();
  hostA!.cut();
  await c.waitForJob(created.id, onB, 'the cut-off instance replaced on bench-part-b', 60_000);
  const replacedMs = performance.now() - cutAt;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, CUT_MS - (performance.now() - cutAt))));
  const copies = containersWithLabel(`edge.job=${created.id}`).filter((c) => c.state === 'running').length;
  if (copies !== 3) throw new Error(`expected 3 running copies while cut off, found ${copies}`);

  const healedAt = performance.now();
  hostA!.heal();
  let onlineMs: number | undefined;
  await waitFor(
    async () => {
      if (onlineMs === undefined && (await nodeOnline('bench-part-a')))
        onlineMs = performance.now() - healedAt;
      const containers = containersWithLabel(`edge.job=${created.id}`);
      return (
        containers.length === 2 &&
        containers.every(
          (container) => container.state === 'running' && container.labels['edge.node'] === nodeB,
        ) &&
        onB(await c.job(created.id))
      );
    },
    'settled with no duplicates',
    60_000,
    50,
  );
  const settledMs = performance.now() - healedAt;
  await waitFor(() => nodeOnline('bench-part-a'), 'bench-part-a online', 30_000);
  onlineMs ??= performance.now() - healedAt;

  await c.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
  await waitFor(() => containersWithLabel(`edge.job=${created.id}`).length === 0, 'job removed', 30_000);
  return { replacedMs, onlineMs, settledMs };
}

it('partition: time from healing to a settled cluster with no duplicates', async () => {
  const rounds: Awaited<ReturnType<typeof round>>[] = [];
  for (let index = 0; index < ROUNDS; index++) rounds.push(await round(index));
  const rows = [
    timingRow(
      'heal -> settled, no duplicates',
      rounds.map((r) => r.settledMs),
    ),
    timingRow(
      'heal -> node online',
      rounds.map((r) => r.onlineMs),
    ),
    timingRow(
      'cut -> replaced and running elsewhere',
      rounds.map((r) => r.replacedMs),
    ),
  ];
  report('partition-heal', rows, {
    rounds: ROUNDS,
    cutMs: CUT_MS,
    nodeTimeoutMs: NODE_TIMEOUT_MS,
    telemetryIntervalMs: 1000,
    samples: rounds.map((r) => ({
      replacedMs: Math.round(r.replacedMs),
      onlineMs: Math.round(r.onlineMs),
      settledMs: Math.round(r.settledMs),
    })),
  });
  expect(rounds).toHaveLength(ROUNDS);
});
