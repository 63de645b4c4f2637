import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

describe('move and replicate', () => {
  const cluster = new E2eCluster();
  let nodeA: string;
  let nodeB: string;

  beforeAll(async () => {
    await cluster.start(['move-a', 'move-b']);
    nodeA = cluster.nodeIds.get('move-a')!;
    nodeB = cluster.nodeIds.get('move-b')!;
  });
  afterAll(async () => {
    await cluster.stop();
  });

  const running = (jobId: string) =>
    containersWithLabel(`edge.job=${jobId}`).filter((container) => container.state === 'running');

  /** Moves instance 0 and watches the API meanwhile: make-before-break never shows it anything but running. */
  async function moveAndWatch(job: JobBody, body: Record<string, unknown>, target: string): Promise<JobBody> {
    const res = await cluster.api(`/api/jobs/${job.id}/move`, { method: 'POST', json: body });
    expect(res.status).toBe(202);
    const seen = new Set<string>();
    const moved = await waitFor(
      async () => {
        const now = await cluster.job(job.id);
        seen.add(now.instances[0]!.status);
        return now.instances[0]?.nodeId === target && now.instances[0].status === 'running' && now;
      },
      `instance 0 running on ${target}`,
      30_000,
      20,
    );
    expect([...seen]).toEqual(['running']);
    await waitFor(() => running(job.id).length === 1, 'the source copy removed', 20_000);
    expect(running(job.id)[0]!.labels['edge.node']).toBe(target);
    return moved;
  }

  it('moves an instance to the node named, then to the one the scheduler picks, keeping its number', async () => {
    const job = await cluster.createJob({
      name: 'move-me',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      constraints: { nodes: ['move-a'] },
    });
    const before = await cluster.waitForJob(job.id, allRunning, 'running on move-a');
    // The constraint pins placement, and a move must respect it: lift it by moving explicitly is refused.
    const refused = await cluster.api(`/api/jobs/${job.id}/move`, {
      method: 'POST',
      json: { instance: 0, to: 'move-b' },
    });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/move-b/);
    await cluster.api(`/api/jobs/${job.id}`, { method: 'DELETE' });

    const free = await cluster.createJob({
      name: 'move-free',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
    });
    const placed = await cluster.waitForJob(free.id, allRunning, 'running');
    const source = placed.instances[0]!.nodeId!;
    const other = source === nodeA ? nodeB : nodeA;
    const otherName = other === nodeA ? 'move-a' : 'move-b';
    const first = await moveAndWatch(placed, { instance: 0, to: otherName }, other);
    expect(first.instances[0]).toMatchObject({ number: 0 });
    expect(first.instances[0]!.generation).toBeGreaterThan(placed.instances[0]!.generation);
    const second = await moveAndWatch(first, { instance: 0 }, source);
    expect(second.instances[0]!.generation).toBeGreaterThan(first.instances[0]!.generation);
    expect(before.instances[0]!.number).toBe(0);
  });

  it('refuses moves that cannot work with 409 and reasons', async () => {
    const job = await cluster.createJob({
      name: 'move-refused',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
    });
    const placed = await cluster.waitForJob(job.id, allRunning, 'running');
    const sourceName = placed.instances[0]!.nodeId === nodeA ? 'move-a' : 'move-b';
    for (const body of [
      { instance: 0, to: sourceName },
      { instance: 0, to: 'no-such-node' },
    ]) {
      const res = await cluster.api(`/api/jobs/${job.id}/move`, { method: 'POST', json: body });
      expect(res.status, JSON.stringify(body)).toBe(409);
    }
    expect(
      (await cluster.api(`/api/jobs/${job.id}/move`, { method: 'POST', json: { instance: 7 } })).status,
    ).toBe(404);
    expect(
      (await cluster.api(`/api/jobs/${job.id}/move`, { method: 'POST', json: { instance: -1 } })).status,
    ).toBe(400);
  });

  it('keeps the instance on its source when the target cannot start it', async () => {
    // Both node engines share this host, so the target cannot bind the host port the source holds.
    const hostPort = await freePort();
    const job = await cluster.createJob({
      name: 'move-port',
      image: 'edge/busybox:latest',
      command: ['httpd', '-f', '-p', '80'],
      ports: [{ container: 80, host: hostPort }],
    });
    const placed = await cluster.waitForJob(job.id, allRunning, 'running');
    const source = placed.instances[0]!.nodeId!;
    const targetName = source === nodeA ? 'move-b' : 'move-a';
    const res = await cluster.api(`/api/jobs/${job.id}/move`, {
      method: 'POST',
      json: { instance: 0, to: targetName },
    });
    expect(res.status).toBe(202);
    await waitFor(
      async () => {
        const events = (await (await cluster.api('/api/events?limit=50')).json()) as {
          type: string;
          jobId?: string;
        }[];
        return events.some((event) => event.type === 'move.failed' && event.jobId === job.id);
      },
      'the move reported failed',
      30_000,
    );
    const after = await cluster.job(job.id);
    expect(after.instances[0]).toMatchObject({
      nodeId: source,
      status: 'running',
      generation: placed.instances[0]!.generation,
    });
    await waitFor(() => running(job.id).length === 1, 'only the source copy left', 20_000);
    expect(running(job.id)[0]!.labels['edge.node']).toBe(source);
    const again = await cluster.api(`/api/jobs/${job.id}/move`, {
      method: 'POST',
      json: { instance: 0, to: targetName },
    });
    expect(again.status).toBe(202);
  });

  it('replicates 1 -> 3 -> 1, spreading up and removing the highest numbers down', async () => {
    const job = await cluster.createJob({
      name: 'scale-me',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
    });
    await cluster.waitForJob(job.id, allRunning, 'one running');
    expect(
      (await cluster.api(`/api/jobs/${job.id}/replicate`, { method: 'POST', json: { replicas: 3 } })).status,
    ).toBe(202);
    const up = await cluster.waitForJob(
      job.id,
      (j) => j.instances.length === 3 && allRunning(j),
      'three running',
    );
    expect(up.instances.map((instance) => instance.number)).toEqual([0, 1, 2]);
    expect(new Set(up.instances.map((instance) => instance.nodeId))).toEqual(new Set([nodeA, nodeB]));
    expect(running(job.id)).toHaveLength(3);

    expect(
      (await cluster.api(`/api/jobs/${job.id}/replicate`, { method: 'POST', json: { replicas: 1 } })).status,
    ).toBe(202);
    const down = await cluster.waitForJob(
      job.id,
      (j) => j.instances.length === 1 && allRunning(j),
      'one left',
      30_000,
    );
    expect(down.instances[0]!.number).toBe(0);
    await waitFor(() => running(job.id).length === 1, 'two containers removed', 20_000);
    expect(((await (await cluster.api(`/api/jobs/${job.id}`)).json()) as { replicas: number }).replicas).toBe(
      1,
    );
  });
});
