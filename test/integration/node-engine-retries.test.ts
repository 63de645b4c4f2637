import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type InstanceState, InstanceStatusBook } from '../../node-engine/instance-status.js';
import { Reconciler } from '../../node-engine/reconciler.js';
import { DockerRuntime } from '../../node-engine/runtimes/docker.js';
import { DesiredStateStore } from '../../node-engine/state/desired-state.js';
import { type Command, JobSpecSchema } from '../../shared/index.js';
import { removeContainersWithLabel } from '../helpers/docker.js';
import { waitFor } from '../helpers/wait.js';

const nodeId = `ne-retries-${process.pid}`;
const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

/**
 * Failures that pass are retried with back-off, forever, without filling the log: the reconciler against the
 * real dockerd, its log lines counted.
 */
describe('node engine retries (dockerd)', () => {
  let dir: string;
  let store: DesiredStateStore;
  let reconciler: Reconciler;
  const lines: { level: number; msg: string }[] = [];
  const seen: InstanceState[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-retries-'));
    store = await DesiredStateStore.load(dir, nodeId);
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const statuses = new InstanceStatusBook();
    statuses.onChange(() => seen.push(...statuses.all().map((state) => ({ ...state }))));
    const runtime = new DockerRuntime({ docker, nodeId, logger, stopTimeoutS: 1 });
    reconciler = new Reconciler({ nodeId, store, runtimes: [runtime], statuses, logger, periodMs: 200 });
    reconciler.start();
  });

  afterAll(async () => {
    await reconciler?.stop();
    removeContainersWithLabel(`edge.node=${nodeId}`);
    await rm(dir, { recursive: true, force: true });
  });

  it('retries a container whose start always fails with back-off, shown in its detail, logging a bounded number of lines', async () => {
    const command: Command = {
      id: randomUUID(),
      command: 'deploy',
      job: {
        id: 'job-nostart',
        ...JobSpecSchema.parse({
          name: 'nostart',
          image: 'edge/busybox:latest',
          command: ['/no/such/program'],
          resources: { cpus: 0.1, memoryMB: 16 },
        }),
      },
      instance: 0,
      generation: 1,
      cluster: ['c1'],
      worker: [nodeId],
      issuedAt: Date.now(),
    };
    const started = Date.now();
    await store.apply(command);
    reconciler.trigger();
    // Tries at about 0, 1, 3 and 7 s: four failures in 8 s, where a pass runs every 200 ms.
    const fourth = await waitFor(
      () => seen.find((state) => state.job === 'job-nostart' && /^back-off 8s: /.test(state.detail)),
      `the fourth failure: (last seen: ${JSON.stringify(seen.slice(-3).map((s) => [s.status, s.detail]))})`,
      20_000,
    );
    const elapsed = Date.now() - started;
    expect(fourth.status).toBe('creating');
    expect(fourth.detail).toMatch(/^back-off 8s: docker could not start the container: .*no such file/);
    for (const delay of ['1s', '2s', '4s'])
      expect(seen.some((state) => state.detail.startsWith(`back-off ${delay}: `))).toBe(true);
    expect(seen.some((state) => state.job === 'job-nostart' && state.status === 'failed')).toBe(false);
    // The back-off, not the 200 ms pass, sets the pace: 1 + 2 + 4 s at least before the fourth failure.
    expect(elapsed).toBeGreaterThanOrEqual(7000);
    // One line said it fails and goes on with back-off; the repeats are debug (not written at info).
    const mine = lines.filter((line) => JSON.stringify(line).includes('nostart') && line.level >= 30);
    expect(mine.filter((line) => line.level >= 40).map((line) => line.msg)).toEqual([
      'deploy failed; trying again with back-off',
    ]);
    expect(mine.length).toBeLessThanOrEqual(3);
  }, 30_000);
});

describe('a corrupt desired state file (dockerd)', () => {
  const node = `ne-corrupt-${process.pid}`;
  let dir: string;
  afterAll(async () => {
    removeContainersWithLabel(`edge.node=${node}`);
    await rm(dir, { recursive: true, force: true });
  });

  it('is set aside, and what runs is taken back from its labels: nothing restarted, nothing removed, nothing twice', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-corrupt-'));
    const logger = pino({ level: 'silent' });
    const runtime = new DockerRuntime({ docker, nodeId: node, logger, stopTimeoutS: 1 });
    const first = await DesiredStateStore.load(dir, node);
    const job = {
      id: 'job-kept',
      ...JobSpecSchema.parse({ name: 'kept', image: 'edge/busybox:latest', command: ['sleep', '3600'] }),
    };
    await first.apply({
      id: randomUUID(),
      command: 'deploy',
      job,
      instance: 0,
      generation: 3,
      cluster: ['c1'],
      worker: [node],
      issuedAt: Date.now(),
      network: { instanceIp: '10.30.0.7', serviceIp: '10.30.0.6' },
    });
    const before = new Reconciler({ nodeId: node, store: first, runtimes: [runtime], logger });
    await before.reconcileNow();
    await before.idle();
    await before.stop();
    const [running] = await runtime.list();
    expect(running).toMatchObject({ state: 'running', generation: 3 });

    // A torn write on a card that lies about fsync.
    await writeFile(first.path, '{"nodeId":"ne-corr');
    const store = await DesiredStateStore.load(dir, node);
    expect(store.corruptFileSetAside).toMatch(/desired-state\.json\.corrupt-\d+$/);
    expect(await readFile(store.corruptFileSetAside!, 'utf8')).toBe('{"nodeId":"ne-corr');
    expect(store.all()).toEqual([]);
    const after = new Reconciler({ nodeId: node, store, runtimes: [runtime], logger });
    await after.reconcileNow();
    await after.idle();
    await after.stop();
    expect(store.get('job-kept', 0)).toMatchObject({
      want: 'run',
      generation: 3,
      job: { name: 'kept', command: ['sleep', '3600'] },
      network: { instanceIp: '10.30.0.7' },
    });
    const workloads = await runtime.list();
    expect(workloads).toHaveLength(1);
    expect(workloads[0]).toMatchObject({ state: 'running', startedAt: running!.startedAt });
    expect(workloads[0]!.handle.id).toBe(running!.handle.id);
    // ... and it is written down again.
    expect((await DesiredStateStore.load(dir, node)).get('job-kept', 0)?.generation).toBe(3);
  });
});
