import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trustedFetch } from '../../shared/index.js';
import { containersWithLabel, inspectContainer } from '../helpers/docker.js';
import { API_TOKEN, allRunning, E2eCluster } from '../helpers/e2e-cluster.js';
import { BINS } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

describe('an all-in-one cluster from the built programs', () => {
  const cluster = new E2eCluster();

  beforeAll(async () => {
    await cluster.start(['e2e-worker-a', 'e2e-worker-b']);
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it('runs 2 replicas on two node engines with the limits asked, and DELETE removes the containers', async () => {
    const created = await cluster.createJob({
      name: 'e2e-hello',
      image: 'edge/busybox:latest',
      command: ['sleep', '3600'],
      replicas: 2,
      resources: { cpus: 0.5, memoryMB: 64, pids: 128 },
    });
    const running = await cluster.waitForJob(created.id, allRunning, 'both instances running');
    expect(new Set(running.instances.map((instance) => instance.nodeId)).size).toBe(2);

    const containers = containersWithLabel(`edge.job=${created.id}`);
    expect(containers).toHaveLength(2);
    for (const container of containers) {
      const inspected = inspectContainer(container.id);
      expect(inspected.State.Running).toBe(true);
      expect(inspected.HostConfig).toMatchObject({
        NanoCpus: 500_000_000,
        Memory: 64 * 1024 * 1024,
        PidsLimit: 128,
      });
    }

    expect((await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(
      () => containersWithLabel(`edge.job=${created.id}`).length === 0,
      'containers removed',
      30_000,
    );
    await waitFor(
      async () => (await cluster.api(`/api/jobs/${created.id}`)).status === 404,
      'job gone',
      15_000,
    );
  });

  it('keeps trying an unpullable image with back-off, saying why in its detail within seconds', async () => {
    const created = await cluster.createJob({
      name: 'e2e-unpullable',
      image: '127.0.0.1:1/none/nope:1',
      constraints: { nodes: ['e2e-worker-a'] },
    });
    const waiting = await cluster.waitForJob(
      created.id,
      (job) => /^back-off \d+s: /.test(job.instances[0]?.detail ?? ''),
      'instance in back-off',
      15_000,
    );
    // Not failed: it holds its place and runs once the image can be had (a registry back, an image loaded).
    expect(waiting.instances[0]!.status).toBe('pulling');
    expect(waiting.instances[0]!.detail).toMatch(/cannot pull image 127\.0\.0\.1:1\/none\/nope:1/);
    await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
  });

  it('sends telemetry with real numbers that an independent mosquitto_sub receives', () => {
    const out = execFileSync(
      'mosquitto_sub',
      [
        ...[
          '-h',
          '127.0.0.1',
          '-p',
          String(cluster.mqttPort),
          '--cafile',
          join(cluster.cmDataDir, 'tls', 'ca.pem'),
          '-V',
          'mqttv311',
          '-u',
          'operator',
          '-P',
          cluster.telemetryToken,
        ],
        ...['-t', 'nodes/+/information', '-C', '1', '-W', '15'],
      ],
      { encoding: 'utf8' },
    );
    const telemetry = JSON.parse(out) as {
      nodeId: string;
      cpu: { cores: number };
      memory: { totalBytes: number; usedBytes: number };
      disk: { totalBytes: number };
    };
    expect([...cluster.nodeIds.values()]).toContain(telemetry.nodeId);
    expect(telemetry.cpu.cores).toBeGreaterThan(0);
    expect(telemetry.memory.totalBytes).toBeGreaterThan(telemetry.memory.usedBytes);
    expect(telemetry.memory.usedBytes).toBeGreaterThan(0);
    expect(telemetry.disk.totalBytes).toBeGreaterThan(0);
  });

  it('answers malformed bodies with 400 naming the field and a missing token with 401', async () => {
    const bad = await cluster.api('/api/jobs', {
      method: 'POST',
      json: { name: 'x', image: 'i', resources: { memoryMB: 'lots' } },
    });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { details: { path: string }[] } };
    expect(body.error.details.map((detail) => detail.path)).toContain('resources.memoryMB');
    const anonymous = await trustedFetch(cluster.ca)(`https://127.0.0.1:${cluster.httpPort}/api/jobs`);
    expect(anonymous.status).toBe(401);
    // Plain HTTP on the HTTPS port: an answer that says what to use instead of a handshake that fails mutely.
    const plain = await fetch(`http://127.0.0.1:${cluster.httpPort}/api/jobs`);
    expect(plain.status).toBe(400);
    expect(await plain.text()).toMatch(/This port speaks HTTPS: use https:\/\//);
  });

  it('keeps every job and instance across a kill -9 of the cluster manager', async () => {
    const created = await cluster.createJob({
      name: 'e2e-survivor',
      image: 'edge/busybox:latest',
      command: ['sleep', '3600'],
      replicas: 2,
    });
    const before = await cluster.waitForJob(created.id, allRunning, 'instances running');

    await cluster.cm!.crash();
    await cluster.startClusterManager();
    const after = await cluster.job(created.id);
    const placement = (job: typeof before) =>
      job.instances.map(({ number, nodeId, containerId }) => ({ number, nodeId, containerId }));
    expect(placement(after)).toEqual(placement(before));
    await cluster.waitForJob(created.id, allRunning, 'instances still running after the restart', 20_000);
    expect(containersWithLabel(`edge.job=${created.id}`)).toHaveLength(2);

    const listed = execFileSync(process.execPath, [BINS.edgectl, 'jobs', '-o', 'json'], {
      env: {
        ...process.env,
        EDGE_SERVER: `https://127.0.0.1:${cluster.httpPort}`,
        EDGE_API_TOKEN: API_TOKEN,
        EDGE_CA_FILE: join(cluster.cmDataDir, 'tls', 'ca.pem'),
      },
      encoding: 'utf8',
    });
    expect(JSON.parse(listed)).toEqual(expect.arrayContaining([expect.objectContaining({ id: created.id })]));
  });
});
