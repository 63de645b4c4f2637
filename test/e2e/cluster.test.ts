import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { containersWithLabel, inspectContainer, removeContainersWithLabel } from '../helpers/docker.js';
import { freePort } from '../helpers/ports.js';
import { BINS, Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  name: string;
  state: string;
  instances: {
    number: number;
    nodeId: string | null;
    status: string;
    detail: string;
    containerId: string | null;
  }[];
}

const API_TOKEN = 'e2e-api-token';
const JOIN_TOKEN = 'e2e-join-token';

describe('an all-in-one cluster from the built programs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-e2e-'));
  let httpPort: number;
  let mqttPort: number;
  let cm: Program;
  const engines: Program[] = [];
  let nodeIds: string[] = [];

  const api = (path: string, init: RequestInit & { json?: unknown } = {}) =>
    fetch(`http://127.0.0.1:${httpPort}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${API_TOKEN}`,
        ...(init.json !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(init.headers as Record<string, string>),
      },
      body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
    });
  const getJob = async (id: string) => (await (await api(`/api/jobs/${id}`)).json()) as JobBody;

  const startClusterManager = async () => {
    cm = Program.start('cluster-manager', BINS.clusterManager, [
      ...['--host', '127.0.0.1', '--http-port', String(httpPort), '--mqtt-port', String(mqttPort)],
      ...['--data-dir', join(dir, 'cm'), '--api-token', API_TOKEN, '--join-token', JOIN_TOKEN],
      ...['--node-timeout', '4000', '--telemetry-interval', '1000'],
    ]);
    await cm.waitForLog(/cluster manager listening/);
  };

  beforeAll(async () => {
    httpPort = await freePort();
    mqttPort = await freePort();
    await startClusterManager();
    for (const name of ['e2e-worker-a', 'e2e-worker-b']) {
      engines.push(
        Program.start(name, BINS.nodeEngine, [
          ...[
            '--cluster-manager',
            `http://127.0.0.1:${httpPort}`,
            '--join-token',
            JOIN_TOKEN,
            '--name',
            name,
          ],
          ...['--data-dir', join(dir, name), '--port', String(await freePort()), '--runtimes', 'docker'],
        ]),
      );
    }
    const nodes = await waitFor(
      async () => {
        const list = (await (await api('/api/nodes')).json()) as { id: string; status: string }[];
        return list.length === 2 && list.every((node) => node.status === 'online') && list;
      },
      'both node engines online',
      30_000,
    );
    nodeIds = nodes.map((node) => node.id);
  });

  afterAll(async () => {
    await Promise.all(engines.map((engine) => engine.stop()));
    await cm?.stop();
    for (const id of nodeIds) removeContainersWithLabel(`edge.node=${id}`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs 2 replicas on two node engines with the limits asked, and DELETE removes the containers', async () => {
    const res = await api('/api/jobs', {
      method: 'POST',
      json: {
        name: 'e2e-hello',
        image: 'edge/busybox:latest',
        command: ['sleep', '3600'],
        replicas: 2,
        resources: { cpus: 0.5, memoryMB: 64, pids: 128 },
      },
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as JobBody;
    const running = await waitFor(
      async () => {
        const job = await getJob(created.id);
        return job.instances.every((instance) => instance.status === 'running') && job;
      },
      'both instances running',
      45_000,
    );
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

    expect((await api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(
      () => containersWithLabel(`edge.job=${created.id}`).length === 0,
      'containers removed',
      30_000,
    );
    await waitFor(async () => (await api(`/api/jobs/${created.id}`)).status === 404, 'job gone', 15_000);
  });

  it('ends an unpullable image failed with a clear detail within seconds', async () => {
    const started = Date.now();
    const res = await api('/api/jobs', {
      method: 'POST',
      json: {
        name: 'e2e-unpullable',
        image: '127.0.0.1:1/none/nope:1',
        constraints: { nodes: ['e2e-worker-a'] },
      },
    });
    const created = (await res.json()) as JobBody;
    const failed = await waitFor(
      async () => {
        const job = await getJob(created.id);
        return job.instances[0]?.status === 'failed' && job.instances[0];
      },
      'instance failed',
      20_000,
    );
    expect(failed.detail).toMatch(/127\.0\.0\.1:1\/none\/nope:1/);
    expect(Date.now() - started).toBeLessThan(15_000);
    await api(`/api/jobs/${created.id}`, { method: 'DELETE' });
  });

  it('sends telemetry with real numbers that an independent mosquitto_sub receives', async () => {
    const out = execFileSync(
      'mosquitto_sub',
      [
        ...['-h', '127.0.0.1', '-p', String(mqttPort), '-V', 'mqttv311', '-u', 'operator', '-P', API_TOKEN],
        ...['-t', 'nodes/+/information', '-C', '1', '-W', '15'],
      ],
      { encoding: 'utf8' },
    );
    const telemetry = JSON.parse(out) as {
      nodeId: string;
      cpu: { cores: number; percent: number };
      memory: { totalBytes: number; usedBytes: number };
      disk: { totalBytes: number };
    };
    expect(nodeIds).toContain(telemetry.nodeId);
    expect(telemetry.cpu.cores).toBeGreaterThan(0);
    expect(telemetry.memory.totalBytes).toBeGreaterThan(telemetry.memory.usedBytes);
    expect(telemetry.memory.usedBytes).toBeGreaterThan(0);
    expect(telemetry.disk.totalBytes).toBeGreaterThan(0);
  });

  it('answers malformed bodies with 400 naming the field and a missing token with 401', async () => {
    const bad = await api('/api/jobs', {
      method: 'POST',
      json: { name: 'x', image: 'i', resources: { memoryMB: 'lots' } },
    });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { details: { path: string }[] } };
    expect(body.error.details.map((detail) => detail.path)).toContain('resources.memoryMB');
    const anonymous = await fetch(`http://127.0.0.1:${httpPort}/api/jobs`);
    expect(anonymous.status).toBe(401);
  });

  it('keeps every job and instance across a kill -9 of the cluster manager', async () => {
    const res = await api('/api/jobs', {
      method: 'POST',
      json: { name: 'e2e-survivor', image: 'edge/busybox:latest', command: ['sleep', '3600'], replicas: 2 },
    });
    const created = (await res.json()) as JobBody;
    const before = await waitFor(
      async () => {
        const job = await getJob(created.id);
        return job.instances.every((instance) => instance.status === 'running') && job;
      },
      'instances running',
      45_000,
    );

    await cm.crash();
    await startClusterManager();
    const after = await getJob(created.id);
    expect(
      after.instances.map(({ number, nodeId, containerId }) => ({ number, nodeId, containerId })),
    ).toEqual(before.instances.map(({ number, nodeId, containerId }) => ({ number, nodeId, containerId })));
    await waitFor(
      async () => {
        const job = await getJob(created.id);
        return job.instances.every((instance) => instance.status === 'running');
      },
      'instances still running after the restart',
      20_000,
    );
    expect(containersWithLabel(`edge.job=${created.id}`)).toHaveLength(2);

    const listed = execFileSync(process.execPath, [BINS.edgectl, 'jobs', '-o', 'json'], {
      env: { ...process.env, EDGE_SERVER: `http://127.0.0.1:${httpPort}`, EDGE_API_TOKEN: API_TOKEN },
      encoding: 'utf8',
    });
    expect(JSON.parse(listed)).toEqual(expect.arrayContaining([expect.objectContaining({ id: created.id })]));
  });
});
