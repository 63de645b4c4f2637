import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, WORKLOAD } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';
import { report } from './report.js';

const RUNS = Number(process.env.BENCH_ROLLING_RUNS ?? 3);
const REPLICAS = 3;
const NEW_IMAGE = 'edge/busybox:bench-v2';

interface Sampled {
  /** From the change asked to every instance running the new spec. */
  totalMs: number;
  /** The longest stretch with fewer than REPLICAS containers running, and with none at all. */
  shortMs: number;
  noneMs: number;
  fewest: number;
}

/**
 * What changing a job's image costs its service: before issue 14 the only way was to delete the job and post it
 * again; now `PUT /api/jobs/:id` rolls it (maxParallel 1, then 3 at once). Docker is polled every 25 ms for the
 * job's running containers: how long fewer than the replicas ran, and how long none did.
 */
describe('changing a running job: delete and create again, against a rolling update', () => {
  const cluster = new E2eCluster();
  beforeAll(async () => {
    execFileSync('docker', ['tag', 'edge/busybox:latest', NEW_IMAGE]);
    await cluster.start(['bench-roll']);
  });
  afterAll(async () => {
    await cluster.stop();
    execFileSync('docker', ['rmi', NEW_IMAGE], { stdio: 'ignore' });
  });

  const spec = (name: string, image: string, maxParallel = 1) => ({
    name,
    image,
    command: WORKLOAD,
    replicas: REPLICAS,
    resources: { cpus: 0.05, memoryMB: 16 },
    update: { maxParallel, minHealthyTimeMs: 0 },
  });

  /** Runs `change`, sampling Docker until `done` holds; label: which containers count. */
  async function sample(label: () => string, change: () => Promise<void>, done: () => Promise<boolean>) {
    let short = 0;
    let none = 0;
    let shortSince: number | undefined;
    let noneSince: number | undefined;
    let fewest = Number.POSITIVE_INFINITY;
    const started = performance.now();
    await change();
    for (;;) {
      const now = performance.now();
      const count = containersWithLabel(label()).filter((c) => c.state === 'running').length;
      fewest = Math.min(fewest, count);
      if (count < REPLICAS) shortSince ??= now;
      else if (shortSince !== undefined) {
        short = Math.max(short, now - shortSince);
        shortSince = undefined;
      }
      if (count === 0) noneSince ??= now;
      else if (noneSince !== undefined) {
        none = Math.max(none, now - noneSince);
        noneSince = undefined;
      }
      if (await done()) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    return { totalMs: performance.now() - started, shortMs: short, noneMs: none, fewest } satisfies Sampled;
  }

  it('measures both', async () => {
    const rows: Record<string, string | number>[] = [];
    const add = (way: string, samples: Sampled[]) => {
      const median = (pick: (s: Sampled) => number) => {
        const sorted = samples.map(pick).sort((a, b) => a - b);
        return Math.round(sorted[Math.floor(sorted.length / 2)]!);
      };
      rows.push({
        way,
        runs: samples.length,
        medianTotalMs: median((s) => s.totalMs),
        medianUnderReplicasMs: median((s) => s.shortMs),
        medianNoneRunningMs: median((s) => s.noneMs),
        fewestRunning: Math.min(...samples.map((s) => s.fewest)),
      });
    };
    const recreate: Sampled[] = [];
    const rolling: Sampled[] = [];
    const rollingWide: Sampled[] = [];
    for (let run = 0; run < RUNS; run++) {
      // Delete and create again: the name is free at once; the new job is a new id.
      const old = await cluster.createJob(spec(`recreate-${run}`, 'edge/busybox:latest'));
      await cluster.waitForJob(old.id, allRunning, 'running');
      let current = old.id;
      recreate.push(
        await sample(
          () => `edge.job.name=recreate-${run}`,
          async () => {
            await cluster.api(`/api/jobs/${old.id}`, { method: 'DELETE' });
            current = (await cluster.createJob(spec(`recreate-${run}`, NEW_IMAGE))).id;
          },
          async () => {
            const job = await cluster.job(current);
            const here = containersWithLabel(`edge.job.name=recreate-${run}`).filter(
              (c) => c.state === 'running',
            );
            return allRunning(job) && here.length === REPLICAS && here.every((c) => c.image === NEW_IMAGE);
          },
        ),
      );
      await cluster.api(`/api/jobs/${current}`, { method: 'DELETE' });

      for (const [samples, maxParallel, name] of [
        [rolling, 1, `rolling-${run}`],
        [rollingWide, REPLICAS, `wide-${run}`],
      ] as const) {
        const job = await cluster.createJob(spec(name, 'edge/busybox:latest', maxParallel));
        await cluster.waitForJob(job.id, allRunning, 'running');
        samples.push(
          await sample(
            () => `edge.job=${job.id}`,
            async () => {
              await cluster.api(`/api/jobs/${job.id}`, {
                method: 'PUT',
                json: spec(name, NEW_IMAGE, maxParallel),
              });
            },
            async () => {
              const now = (await cluster.job(job.id)) as { rollout?: { version: number; state: string } };
              const here = containersWithLabel(`edge.job=${job.id}`).filter((c) => c.state === 'running');
              return (
                now.rollout?.version === 2 &&
                now.rollout.state === 'succeeded' &&
                here.length === REPLICAS &&
                here.every((c) => c.image === NEW_IMAGE)
              );
            },
          ),
        );
        await cluster.api(`/api/jobs/${job.id}`, { method: 'DELETE' });
        await waitFor(
          () => containersWithLabel(`edge.job=${job.id}`).length === 0,
          'containers gone',
          30_000,
        );
      }
    }
    add('delete + create (before issue 14)', recreate);
    add('PUT, rolling, maxParallel 1', rolling);
    add(`PUT, rolling, maxParallel ${REPLICAS}`, rollingWide);
    report('rolling-update', rows, { replicas: REPLICAS, runs: RUNS, minHealthyTimeMs: 0, pollMs: 25 });
  });
});
