import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
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
