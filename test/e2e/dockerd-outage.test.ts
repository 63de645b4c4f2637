import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { PrivateDockerd } from '../helpers/private-dockerd.js';

const NODE = 'outage-a';

/**
 * A node engine whose dockerd goes away: stopped for 30 s under running workloads and a deploy, and not yet
 * running when the node engine starts. The dockerd is the test's own (PrivateDockerd), the rest is the built
 * programs as a user runs them.
 */
describe('workloads through dockerd outages', () => {
  let dockerd: PrivateDockerd;
  let cluster: E2eCluster;

  beforeAll(async () => {
    dockerd = new PrivateDockerd();
    await dockerd.start();
    dockerd.load('edge/busybox:latest');
    cluster = new E2eCluster();
    await cluster.startClusterManager();
    await cluster.startEngine(NODE, ['--docker-socket', dockerd.socket]);
    await cluster.waitForNodes([NODE]);
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
    await dockerd?.destroy();
  });

  const containersOf = (jobId: string) =>
    dockerd
      .docker(['ps', '-aq', '--filter', `label=edge.job=${jobId}`])
      .split('\n')
      .filter(Boolean);
  const create = (name: string, restart: Record<string, unknown>) =>
    cluster.createJob({
      name,
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      restart,
      constraints: { nodes: [NODE] },
    });
  /** Waits for the job to run, or fails saying where it stands and what the node engine logged about it. */
  const running = async (job: JobBody, what: string, timeoutMs?: number) => {
    try {
      await cluster.waitForJob(job.id, allRunning, what, timeoutMs);
    } catch (error) {
      const now = (await cluster.job(job.id)).instances[0];
      const log = (cluster.engines.get(NODE)?.output ?? '')
        .split('\n')
        .filter((line) => line.includes(job.name) || line.includes('runtime'))
        .slice(-8);
      throw new Error(`${(error as Error).message}: ${JSON.stringify(now)}\n${log.join('\n')}`);
    }
  };
  const statuses = async (jobs: JobBody[]) =>
    Promise.all(jobs.map(async (job) => (await cluster.job(job.id)).instances[0]!));

  it('runs everything desired again after dockerd was stopped for 30 s, a deploy sent meanwhile too: nothing failed, no restart counted, no duplicate', async () => {
    const always = await create('out-always', { policy: 'always' });
    // Exits 0 on the SIGTERM dockerd sends when it stops: `on-failure` would call that completed.
    const onFailure = await create('out-onfailure', { policy: 'on-failure', maxRetries: 0 });
    for (const job of [always, onFailure])
      await cluster.waitForJob(job.id, allRunning, `${job.name} running`);

    await dockerd.stop();
    const later = await create('out-later', { policy: 'always' });
    const jobs = [always, onFailure, later];
    const outageEnds = Date.now() + 30_000;
    while (Date.now() < outageEnds) {
      for (const instance of await statuses(jobs)) expect(instance.status).not.toBe('failed');
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
    // The node said it has no Docker while dockerd was away: the deploy waits at the cluster manager, saying why.
    const waiting = (await statuses([later]))[0]!;
    expect(waiting).toMatchObject({ status: 'pending', detail: expect.stringMatching(/outage-a: .*docker/) });

    await dockerd.start();
    for (const job of jobs) await running(job, `${job.name} running again`, 60_000);
    for (const instance of await statuses([always, onFailure])) expect(instance.restarts).toBe(0);
    for (const job of jobs) expect(containersOf(job.id)).toHaveLength(1);
  }, 180_000);

  it('takes Docker jobs once dockerd answers, when the node engine started while it was down', async () => {
    const engine = cluster.engines.get(NODE)!;
    await engine.stop();
    await dockerd.stop();
    const restarted = await cluster.startEngine(NODE, ['--docker-socket', dockerd.socket]);
    await restarted.waitForLog(/runtime not available/);
    await cluster.waitForNodes([NODE]);
    const fresh = await create('out-fresh', { policy: 'always' });
    await new Promise((resolve) => setTimeout(resolve, 20_000));
    expect((await cluster.job(fresh.id)).instances[0]!.status).not.toBe('running');

    await dockerd.start();
    await running(fresh, 'out-fresh running once dockerd answers', 60_000);
    const jobs = (await (await cluster.api('/api/jobs')).json()) as JobBody[];
    for (const job of jobs) await running(job, `${job.name} running`, 60_000);
    for (const job of jobs) expect(containersOf(job.id)).toHaveLength(1);
  }, 180_000);
});
