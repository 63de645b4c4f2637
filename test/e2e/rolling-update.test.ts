import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterEvent, JobVersion, Rollout } from '../../shared/index.js';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';

/** A second name for the test image: a "new image" to roll out, with nothing to pull. */
const NEW_IMAGE = 'edge/busybox:rolling-v2';

type RolledJob = JobBody & { version: number; rollout?: Rollout };

/**
 * Job updates (issue 14, item 1) with real node engines and dockerd: a rolling update replaces instances
 * make-before-break, and a version whose health check fails reverts by itself.
 */
describe('rolling updates', () => {
  const cluster = new E2eCluster();

  beforeAll(async () => {
    execFileSync('docker', ['tag', 'edge/busybox:latest', NEW_IMAGE]);
    await cluster.start(['roll-a', 'roll-b']);
  });
  afterAll(async () => {
    await cluster.stop();
    execFileSync('docker', ['rmi', NEW_IMAGE], { stdio: 'ignore' });
  });

  const running = (jobId: string) =>
    containersWithLabel(`edge.job=${jobId}`).filter((container) => container.state === 'running');

  /**
   * Docker itself is the witness: how many containers of the job run, every 50 ms, from now until `stop()`,
   * which resolves to the fewest and the most seen.
   */
  const watchRunning = (jobId: string) => {
    let fewest = Number.POSITIVE_INFINITY;
    let most = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const count = running(jobId).length;
        fewest = Math.min(fewest, count);
        most = Math.max(most, count);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    return {
      stop: async () => {
        watching = false;
        await watcher;
        return { fewest, most };
      },
    };
  };

  const put = async (id: string, spec: Record<string, unknown>) => {
    const res = await cluster.api(`/api/jobs/${id}`, { method: 'PUT', json: spec });
    expect(res.status).toBe(200);
    return (await res.json()) as RolledJob & { change: { action: string; changed: string[] } };
  };

  const rolloutOf = (id: string, version: number, state: Rollout['state']) =>
    waitFor(
      async () => {
        const job = (await cluster.job(id)) as RolledJob;
        return job.rollout?.version === version && job.rollout.state === state && job;
      },
      `version ${version} ${state}`,
      90_000,
    );

  const events = async (id: string): Promise<ClusterEvent[]> =>
    (await (await cluster.api(`/api/events?job=${id}&limit=200`)).json()) as ClusterEvent[];

  it('rolls 3 replicas to a new image with never fewer than 2 running (3 in fact), checked by polling Docker', async () => {
    const spec = {
      name: 'rolling',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 3,
      resources: { cpus: 0.1, memoryMB: 32 },
      update: { maxParallel: 1, minHealthyTimeMs: 1000 },
    };
    const created = await cluster.createJob(spec);
    await cluster.waitForJob(created.id, allRunning, 'three running');
    await rolloutOf(created.id, 1, 'succeeded');
    await waitFor(() => running(created.id).length === 3, 'three containers');

    const watch = watchRunning(created.id);
    const updated = await put(created.id, { ...spec, image: NEW_IMAGE });
    expect(updated.change).toEqual({ action: 'rollout', changed: ['image'] });
    expect(updated.version).toBe(2);
    const done = await rolloutOf(created.id, 2, 'succeeded');
    await waitFor(() => running(created.id).length === 3, 'the old containers gone');
    const { fewest, most } = await watch.stop();

    // The issue asks for never fewer than 2; make-before-break with room to spare never drops below 3.
    expect(fewest).toBeGreaterThanOrEqual(3);
    // Make-before-break: a new one ran beside the three old ones before one of them stopped.
    expect(most).toBe(4);
    expect(done.instances).toHaveLength(3);
    expect(done.instances.every((instance) => instance.status === 'running')).toBe(true);
    expect(running(created.id).map((container) => container.image)).toEqual([
      NEW_IMAGE,
      NEW_IMAGE,
      NEW_IMAGE,
    ]);
    const versions = (await (await cluster.api(`/api/jobs/${created.id}/versions`)).json()) as JobVersion[];
    expect(versions.map((version) => [version.version, version.stable, version.spec.image])).toEqual([
      [2, true, NEW_IMAGE],
      [1, true, 'edge/busybox:latest'],
    ]);
    const types = (await events(created.id)).map((event) => event.type);
    expect(types).toContain('job.updated');
    expect(types).toContain('rollout.succeeded');

    // The same spec again is no change at all: no version, no container touched.
    const ids = running(created.id)
      .map((container) => container.id)
      .sort();
    const again = await put(created.id, { ...spec, image: NEW_IMAGE });
    expect(again.change).toEqual({ action: 'none', changed: [] });
    expect(again.version).toBe(2);
    expect(
      running(created.id)
        .map((container) => container.id)
        .sort(),
    ).toEqual(ids);
  });

  it('reverts by itself when the new version fails its health check, and keeps serving meanwhile', async () => {
    const spec = {
      name: 'reverting',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 2,
      resources: { cpus: 0.1, memoryMB: 32 },
      update: { maxParallel: 1, minHealthyTimeMs: 500, healthyDeadlineMs: 60_000 },
      health: { command: ['true'], intervalMs: 500, failures: 2 },
    };
    const created = await cluster.createJob(spec);
    const stable = await rolloutOf(created.id, 1, 'succeeded');
    expect(stable.instances.map((instance) => (instance as { health?: string }).health)).toEqual([
      'healthy',
      'healthy',
    ]);
    const before = running(created.id)
      .map((container) => container.id)
      .sort();
    const watch = watchRunning(created.id);
    // Version 2's check looks for a file that is not there: it runs, but never healthy.
    const broken = { ...spec, health: { ...spec.health, command: ['test', '-e', '/ready'] } };
    const updated = await put(created.id, broken);
    expect(updated.change.action).toBe('rollout');
    const reverted = await rolloutOf(created.id, 3, 'succeeded');
    await waitFor(() => running(created.id).length === 2, 'the failed instance gone');
    const { fewest } = await watch.stop();

    expect(fewest).toBeGreaterThanOrEqual(2);
    expect(reverted.rollout).toMatchObject({ version: 3, from: 2, revertOf: 2, state: 'succeeded' });
    expect((reverted as unknown as typeof spec).health.command).toEqual(['true']);
    const log = (await events(created.id)).reverse();
    const failed = log.find((event) => event.type === 'rollout.failed');
    expect(failed?.message).toMatch(/version 2 failed: #\d+ failed its health check/);
    expect(log.some((event) => event.type === 'rollout.reverting')).toBe(true);
    const health = log.find((event) => event.type === 'instance.health' && /unhealthy/.test(event.message));
    expect(health?.message).toMatch(/health check failing: exit 1/);
    // The two that run are the version that ran healthy, taken over by version 3 without a restart; the failed
    // one is gone once its node acked its delete.
    const settled = await cluster.waitForJob(
      created.id,
      (job) => job.instances.length === 2,
      'the failed instance removed',
    );
    expect(
      settled.instances.map((instance) => [instance.status, (instance as { version?: number }).version]),
    ).toEqual([
      ['running', 3],
      ['running', 3],
    ]);
    expect(
      running(created.id)
        .map((container) => container.id)
        .sort(),
    ).toEqual(before);
    const versions = (await (await cluster.api(`/api/jobs/${created.id}/versions`)).json()) as JobVersion[];
    expect(versions.map((version) => [version.version, version.stable])).toEqual([
      [3, true],
      [2, false],
      [1, true],
    ]);
  });

  it('checks health over HTTP at the container address', async () => {
    const created = await cluster.createJob({
      name: 'http-health',
      image: 'edge/busybox:latest',
      command: ['sh', '-c', 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www'],
      resources: { cpus: 0.1, memoryMB: 32 },
      update: { minHealthyTimeMs: 500 },
      health: { http: { port: 8080, path: '/index.html' }, intervalMs: 500 },
    });
    const healthy = await rolloutOf(created.id, 1, 'succeeded');
    expect((healthy.instances[0] as { health?: string }).health).toBe('healthy');
    // A path that is not there answers 404: unhealthy, and the roll-out to it fails (nothing to revert past 1).
    const updated = await put(created.id, {
      name: 'http-health',
      image: 'edge/busybox:latest',
      command: ['sh', '-c', 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www'],
      resources: { cpus: 0.1, memoryMB: 32 },
      update: { minHealthyTimeMs: 500, autoRevert: false },
      health: { http: { port: 8080, path: '/missing' }, intervalMs: 500, failures: 1 },
    });
    expect(updated.version).toBe(2);
    const failed = await rolloutOf(created.id, 2, 'failed');
    expect(failed.rollout?.detail).toMatch(/failed its health check/);
    const log = await events(created.id);
    expect(log.some((event) => /answered 404/.test(event.message))).toBe(true);
    // Without autoRevert it stays as it is: the old instance still serves.
    expect(running(created.id).length).toBeGreaterThanOrEqual(1);
  });

  it('drains a node of its 3 instances make-before-break, with never fewer than 3 running', async () => {
    expect((await cluster.api('/api/nodes/roll-b/cordon', { method: 'POST' })).status).toBe(200);
    const created = await cluster.createJob({
      name: 'drain-me',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 3,
      resources: { cpus: 0.1, memoryMB: 32 },
    });
    await cluster.waitForJob(created.id, allRunning, 'three running on roll-a');
    await waitFor(() => running(created.id).length === 3, 'three containers');
    expect((await cluster.api('/api/nodes/roll-b/uncordon', { method: 'POST' })).status).toBe(200);
    const watch = watchRunning(created.id);
    expect((await cluster.api('/api/nodes/roll-a/drain', { method: 'POST' })).status).toBe(200);
    const target = cluster.nodeIds.get('roll-b')!;
    await waitFor(
      async () => {
        const node = (await (await cluster.api('/api/nodes/roll-a')).json()) as { draining: boolean };
        const here = running(created.id);
        return !node.draining && here.length === 3 && here.every((c) => c.labels['edge.node'] === target);
      },
      'all three running on roll-b, roll-a drained',
      90_000,
    );
    const { fewest } = await watch.stop();
    expect(fewest).toBeGreaterThanOrEqual(3);
    const job = await cluster.job(created.id);
    expect(job.instances.map((instance) => [instance.number, instance.nodeId])).toEqual([
      [0, target],
      [1, target],
      [2, target],
    ]);
    expect((await cluster.api('/api/nodes/roll-a/uncordon', { method: 'POST' })).status).toBe(200);
  });
});
