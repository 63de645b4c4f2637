import { afterAll, beforeAll, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { E2eCluster, WORKLOAD } from '../helpers/e2e-cluster.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';
import { dockerRunOnce } from './docker-run.js';
import { median, percentile, report, rssMiB } from './report.js';

const DEPLOYS = Number(process.env.BENCH_DEPLOYS ?? 20);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 60_000);

/** The cluster manager (TLS, as by default) and one real node engine on this machine's dockerd. */
const cluster = new E2eCluster();
let cm: Program;
let engine: Program;

const api = (path: string, init: RequestInit & { json?: unknown } = {}) => cluster.api(path, init);

beforeAll(async () => {
  await cluster.startClusterManager();
  cm = cluster.cm!;
  engine = await cluster.startEngine('bench-worker');
  await cluster.waitForNodes(['bench-worker']);
});

afterAll(async () => {
  await cluster.stop();
});

async function deployOnce(index: number): Promise<number> {
  const started = performance.now();
  const res = await api('/api/jobs', {
    method: 'POST',
    json: {
      name: `bench-${index}`,
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      restart: { policy: 'never' },
    },
  });
  const job = (await res.json()) as { id: string };
  await waitFor(
    async () => {
      const body = (await (await api(`/api/jobs/${job.id}`)).json()) as { instances: { status: string }[] };
      return body.instances[0]?.status === 'running';
    },
    'instance running',
    30_000,
    5,
  );
  const elapsed = performance.now() - started;
  await api(`/api/jobs/${job.id}`, { method: 'DELETE' });
  await waitFor(
    () => containersWithLabel(`edge.job=${job.id}`).length === 0,
    'container removed',
    30_000,
    50,
  );
  return elapsed;
}

it('deploy latency: POST /api/jobs to running, against docker run -d', async () => {
  dockerRunOnce();
  await deployOnce(-1);
  const direct: number[] = [];
  const orchestrated: number[] = [];
  // Interleaved so that both see the same machine load.
  for (let index = 0; index < DEPLOYS; index++) {
    direct.push(dockerRunOnce());
    orchestrated.push(await deployOnce(index));
  }
  const rows = [
    {
      path: 'docker run -d',
      medianMs: Math.round(median(direct)),
      p95Ms: Math.round(percentile(direct, 95)),
    },
    {
      path: 'POST /api/jobs -> running',
      medianMs: Math.round(median(orchestrated)),
      p95Ms: Math.round(percentile(orchestrated, 95)),
    },
  ];
  const ratio = Math.round((median(orchestrated) / median(direct)) * 100) / 100;
  report('deploy-latency', rows, { deploys: DEPLOYS, ratioOfMedians: ratio, direct, orchestrated });
  console.log(`deploy latency: median ratio ${ratio}x against docker run -d`);
  expect(orchestrated).toHaveLength(DEPLOYS);
});

it('idle memory after a minute with one job running', async () => {
  const res = await api('/api/jobs', {
    method: 'POST',
    json: { name: 'bench-idle', image: 'edge/busybox:latest', command: ['sleep', '3600'] },
  });
  const job = (await res.json()) as { id: string };
  await waitFor(async () => {
    const body = (await (await api(`/api/jobs/${job.id}`)).json()) as { instances: { status: string }[] };
    return body.instances[0]?.status === 'running';
  }, 'instance running');
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
  const rows = [
    { process: 'cluster manager (embedded broker)', rssMiB: rssMiB(cm.pid), targetMiB: 150 },
    { process: 'node engine', rssMiB: rssMiB(engine.pid), targetMiB: 80 },
  ];
  report('idle-memory', rows, { idleMs: IDLE_MS });
  expect(rows.every((row) => row.rssMiB > 0)).toBe(true);
});
