import { afterAll, beforeAll, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';
import { report, timingRow } from './report.js';

const ROUNDS = Math.min(10, Math.max(1, Number(process.env.BENCH_FAILOVER_ROUNDS ?? 5)));
/** 4 replicas over 2 nodes: each kill loses 2 instances. */
const REPLICAS = 4;
/** The cluster manager's default. */
const NODE_TIMEOUT_MS = 6000;

const cluster = new E2eCluster({ nodeTimeoutMs: NODE_TIMEOUT_MS });

beforeAll(async () => {
  await cluster.start(['bench-fail-a', 'bench-fail-b']);
});

afterAll(async () => {
  await cluster.stop();
});

async function nodeStatus(name: string): Promise<string | undefined> {
  const nodes = (await (await cluster.api('/api/nodes')).json()) as { name: string; status: string }[];
  return nodes.find((node) => node.name === name)?.status;
}

/**
 * One round: a fresh job spread over both nodes, `kill -9` of A, timed until every instance runs on B; then A
 * is started again and the round ends once its old copies are gone and it is online (a settled cluster).
 */
async function round(index: number) {
  const nodeA = cluster.nodeIds.get('bench-fail-a')!;
  const nodeB = cluster.nodeIds.get('bench-fail-b')!;
  const created = await cluster.createJob({
    name: `bench-fail-${index}`,
    image: 'edge/busybox:latest',
    command: WORKLOAD,
    replicas: REPLICAS,
  });
  const before = await cluster.waitForJob(created.id, allRunning, 'every instance running');
  const lost = before.instances.filter((instance) => instance.nodeId === nodeA).length;
  if (lost === 0) throw new Error('no instance was placed on bench-fail-a');

  const killedAt = performance.now();
  await cluster.engines.get('bench-fail-a')!.crash();
  let offlineMs: number | undefined;
  const onB = (job: JobBody) =>
    allRunning(job) && job.instances.every((instance) => instance.nodeId === nodeB);
  await waitFor(
    async () => {
      if (offlineMs === undefined && (await nodeStatus('bench-fail-a')) === 'offline')
        offlineMs = performance.now() - killedAt;
      return onB(await cluster.job(created.id));
    },
    'every instance running on bench-fail-b',
    60_000,
    50,
  );
  const runningElsewhereMs = performance.now() - killedAt;
  offlineMs ??= runningElsewhereMs;

  await cluster.startEngine('bench-fail-a');
  await waitFor(
    () => containersWithLabel(`edge.node=${nodeA}`).every((c) => c.labels['edge.job'] !== created.id),
    'the old copies removed from bench-fail-a',
    30_000,
  );
  await cluster.waitForNodes(['bench-fail-a', 'bench-fail-b']);
  const running = containersWithLabel(`edge.job=${created.id}`).filter((c) => c.state === 'running');
  if (running.length !== REPLICAS) throw new Error(`expected ${REPLICAS} copies, found ${running.length}`);
  await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
  await waitFor(() => containersWithLabel(`edge.job=${created.id}`).length === 0, 'job removed', 30_000);
  return { lost, offlineMs, runningElsewhereMs };
}

it('failover: time from kill -9 of a node engine to all its instances running elsewhere', async () => {
  const rounds: Awaited<ReturnType<typeof round>>[] = [];
  for (let index = 0; index < ROUNDS; index++) rounds.push(await round(index));
  const rows = [
    timingRow(
      'kill -9 -> all its instances running elsewhere',
      rounds.map((r) => r.runningElsewhereMs),
    ),
    timingRow(
      'kill -9 -> node offline',
      rounds.map((r) => r.offlineMs),
    ),
  ];
  report('failover', rows, {
    rounds: ROUNDS,
    replicas: REPLICAS,
    nodeTimeoutMs: NODE_TIMEOUT_MS,
    telemetryIntervalMs: 1000,
    samples: rounds.map((r) => ({
      lostInstances: r.lost,
      offlineMs: Math.round(r.offlineMs),
      runningElsewhereMs: Math.round(r.runningElsewhereMs),
    })),
  });
  expect(rounds).toHaveLength(ROUNDS);
});
