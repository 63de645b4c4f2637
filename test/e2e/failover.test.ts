import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';

describe('a cluster that heals itself', () => {
  const cluster = new E2eCluster();

  beforeAll(async () => {
    await cluster.start(['heal-a', 'heal-b']);
  });
  afterAll(async () => {
    await cluster.stop();
  });

  const runningContainers = (jobId: string) =>
    containersWithLabel(`edge.job=${jobId}`).filter((container) => container.state === 'running');

  it('runs the instances of a killed node engine elsewhere within 15 s, and removes the old copies when it returns', async () => {
    const created = await cluster.createJob({
      name: 'heal-kill',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 2,
    });
    const before = await cluster.waitForJob(created.id, allRunning, 'both instances running');
    const nodeA = cluster.nodeIds.get('heal-a')!;
    const nodeB = cluster.nodeIds.get('heal-b')!;
    expect(new Set(before.instances.map((instance) => instance.nodeId))).toEqual(new Set([nodeA, nodeB]));

    const killedAt = Date.now();
    await cluster.engines.get('heal-a')!.crash();
    const after = await cluster.waitForJob(
      created.id,
      (job) => allRunning(job) && job.instances.every((instance) => instance.nodeId === nodeB),
      'every instance running on heal-b',
      15_000,
    );
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    const moved = after.instances.find(
      (instance) => before.instances.find((b) => b.number === instance.number)?.nodeId === nodeA,
    )!;
    expect(moved.generation).toBeGreaterThan(
      before.instances.find((b) => b.number === moved.number)!.generation,
    );

    // The killed engine's container kept running meanwhile (nothing could stop it): 3 copies until it returns.
    expect(
      containersWithLabel(`edge.node=${nodeA}`).filter((c) => c.labels['edge.job'] === created.id),
    ).toHaveLength(1);
    await cluster.startEngine('heal-a');
    await waitFor(
      () => containersWithLabel(`edge.node=${nodeA}`).every((c) => c.labels['edge.job'] !== created.id),
      'the old copy removed from heal-a',
      20_000,
    );
    expect(runningContainers(created.id)).toHaveLength(2);
    const settled = await cluster.job(created.id);
    expect(settled.instances.map((instance) => instance.nodeId)).toEqual([nodeB, nodeB]);
    await cluster.waitForNodes(['heal-a', 'heal-b']);
  });

  const containerOf = (job: JobBody) => job.instances[0]!.containerId!;

  it('restarts a killed container under "always" and "on-failure", and gives up under "never"', async () => {
    const jobs: Record<string, JobBody> = {};
    for (const policy of ['always', 'on-failure', 'never'] as const) {
      jobs[policy] = await cluster.createJob({
        name: `heal-${policy}`,
        image: 'edge/busybox:latest',
        command: WORKLOAD,
        restart: { policy, maxRetries: 3 },
        constraints: { nodes: ['heal-b'] },
      });
    }
    for (const [policy, job] of Object.entries(jobs)) {
      const running = await cluster.waitForJob(job.id, allRunning, `${policy} running`);
      execFileSync('docker', ['kill', containerOf(running)], { stdio: 'ignore' });
    }
    for (const policy of ['always', 'on-failure']) {
      const back = await cluster.waitForJob(
        jobs[policy]!.id,
        (job) => job.instances[0]?.status === 'running' && job.instances[0].restarts === 1,
        `${policy} restarted after docker kill`,
        20_000,
      );
      expect(back.instances[0]!.restarts).toBe(1);
    }
    // Restart counts outlive the node engine: after its restart the next kill counts as the second.
    await cluster.engines.get('heal-b')!.stop();
    await cluster.startEngine('heal-b');
    await cluster.waitForNodes(['heal-b']);
    const always = await cluster.waitForJob(jobs.always!.id, allRunning, 'always running after the restart');
    execFileSync('docker', ['kill', containerOf(always)], { stdio: 'ignore' });
    await cluster.waitForJob(
      jobs.always!.id,
      (job) => job.instances[0]?.status === 'running' && job.instances[0].restarts === 2,
      'always restarted a second time',
      20_000,
    );
    const never = await cluster.waitForJob(
      jobs.never!.id,
      (job) => job.instances[0]?.status === 'failed',
      'never: failed after docker kill',
      20_000,
    );
    expect(never.instances[0]).toMatchObject({ exitCode: 137, restarts: 0 });
    expect(runningContainers(jobs.never!.id)).toHaveLength(0);
  });

  it('brings back a container removed behind its back', async () => {
    const created = await cluster.createJob({
      name: 'heal-removed',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      constraints: { nodes: ['heal-b'] },
    });
    const running = await cluster.waitForJob(created.id, allRunning, 'running');
    execFileSync('docker', ['rm', '-f', containerOf(running)], { stdio: 'ignore' });
    const back = await cluster.waitForJob(
      created.id,
      (job) => allRunning(job) && containerOf(job) !== containerOf(running),
      'a new container running',
      20_000,
    );
    expect(runningContainers(created.id).map((c) => c.id)).toEqual([containerOf(back)]);
  });
});
