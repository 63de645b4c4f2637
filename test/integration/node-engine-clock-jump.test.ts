import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeContainersWithLabel } from '../helpers/docker.js';
import { FakeClusterManager } from '../helpers/fake-cluster-manager.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const nodeId = `ne-clock-${process.pid}`;
/** Debian's libfaketime (scripts/test-env.sh installs it). */
const LIBFAKETIME = readdirSync('/usr/lib')
  .map((dir) => `/usr/lib/${dir}/faketime/libfaketime.so.1`)
  .find((file) => existsSync(file));

/**
 * The node engine's wall clock set forward an hour and then back two while a container crash-loops: the restart
 * back-off goes on doubling (1, 2, 4, 8, 16 s) as without a jump. Before restart timing was on the monotonic
 * clock, the jump forward made the running container look 10 minutes old and reset the back-off, and the jump
 * back held every restart until the clock caught up with the exit time dockerd gave.
 *
 * libfaketime moves the node engine's wall clock only (FAKETIME_DONT_FAKE_MONOTONIC), as setting the date does;
 * dockerd keeps the real time, so its times are an hour apart from the engine's after each jump.
 */
describe('node engine under a wall-clock jump', () => {
  const cm = new FakeClusterManager(nodeId);
  let dataDir: string;
  let engine: Program | undefined;

  beforeAll(async () => {
    await cm.start();
    dataDir = await mkdtemp(join(tmpdir(), 'ne-clock-'));
  });

  afterAll(async () => {
    await engine?.stop();
    await cm.stop();
    removeContainersWithLabel(`edge.node=${nodeId}`);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  /** The restarts the node engine announced for the job: [restart number, delay in s]. */
  const announced = (job: string) =>
    cm.reports.flatMap((report) => {
      const due =
        report.job === job ? /restart (\d+) due at .* \(in (\d+) s\)/.exec(report.detail ?? '') : null;
      return due ? [[Number(due[1]), Number(due[2])] as const] : [];
    });

  it('changes no restart timing', { timeout: 90_000 }, async () => {
    expect(LIBFAKETIME, 'libfaketime (scripts/test-env.sh installs it)').toBeDefined();
    const clock = join(dataDir, 'faketime');
    await writeFile(clock, '+0\n');
    engine = await cm.startEngine(dataDir, {
      LD_PRELOAD: LIBFAKETIME!,
      FAKETIME_TIMESTAMP_FILE: clock,
      FAKETIME_NO_CACHE: '1',
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    });
    const job = 'crash-loop';
    await cm.send(
      cm.deploy(job, {
        image: 'edge/busybox:latest',
        command: ['sh', '-c', 'sleep 1; exit 1'],
        restart: { policy: 'always' },
      }),
    );
    const restart = (n: number) =>
      waitFor(() => announced(job).some(([number]) => number === n), `restart ${n} announced`, 40_000);
    await restart(2);
    // Restart 2 is due in 2 s: the clock jumps forward while it runs.
    await writeFile(clock, '+1h\n');
    await restart(3);
    // And back two hours: the engine's clock is now an hour behind dockerd's exit times.
    await writeFile(clock, '-1h\n');
    await restart(5);
    const delays = new Map(announced(job));
    expect([1, 2, 3, 4, 5].map((n) => delays.get(n))).toEqual([1, 2, 4, 8, 16]);
  });
});
