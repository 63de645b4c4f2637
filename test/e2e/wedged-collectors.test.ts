import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NVIDIA_SMI_ARGS } from '../../node-engine/telemetry/gpus.js';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';

interface NodeBody {
  name: string;
  status: string;
  lastSeen: number | null;
  capacity: { gpus: { model: string; utilizationPercent?: number | null; stale?: boolean }[] };
}

/**
 * A GPU driver that wedges: a fake nvidia-smi on the node engine's PATH that answers like the real one until a
 * file named `hang` appears beside it, then ignores SIGTERM and never answers (as nvidia-smi does on a stuck
 * driver). The node must join, keep its telemetry interval and stay online.
 */
describe('a node engine with a wedged nvidia-smi', () => {
  let dir: string;
  let cluster: E2eCluster;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edge-wedged-'));
    await writeFile(
      join(dir, 'nvidia-smi'),
      `#!/bin/sh\n[ "$*" = "${NVIDIA_SMI_ARGS.join(' ')}" ] || exit 9\n` +
        `if [ -e ${dir}/hang ]; then trap '' TERM; sleep 3600 & wait; fi\n` +
        `echo '0, NVIDIA Jetson Orin, 8192, 512, 42, 50'\n`,
    );
    await chmod(join(dir, 'nvidia-smi'), 0o755);
    cluster = new E2eCluster();
    await cluster.startClusterManager();
  });

  afterAll(async () => {
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const node = async (name: string) =>
    ((await (await cluster.api('/api/nodes')).json()) as NodeBody[]).find((n) => n.name === name);
  const withFake = () => ({ env: { PATH: `${dir}:${process.env.PATH ?? ''}` } });

  /** Watches the node for `ms`: it stays online and is heard from at least every `everyMs`. */
  async function heardThroughout(name: string, ms: number, everyMs: number): Promise<NodeBody> {
    const until = Date.now() + ms;
    let last = await node(name);
    while (Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const now = await node(name);
      expect(now?.status).toBe('online');
      expect(Date.now() - (now?.lastSeen ?? 0)).toBeLessThan(everyMs);
      last = now;
    }
    return last!;
  }

  it('keeps its telemetry interval and stays online when nvidia-smi starts to hang, its GPU numbers marked stale', async () => {
    await cluster.startEngine('wedge-later', [], withFake());
    await cluster.waitForNodes(['wedge-later']);
    const fresh = await waitFor(
      async () =>
        (await node('wedge-later'))?.capacity.gpus[0]?.utilizationPercent === 42 && node('wedge-later'),
      'live GPU numbers',
    );
    expect(fresh.capacity.gpus[0]?.stale).toBeUndefined();
    await writeFile(join(dir, 'hang'), '');
    await waitFor(
      async () => (await node('wedge-later'))?.capacity.gpus[0]?.stale === true,
      'GPUs marked stale',
    );
    // The e2e telemetry interval is 1 s: never 3 s without a message, for 12 s of a wedged driver.
    const later = await heardThroughout('wedge-later', 12_000, 3000);
    expect(later.capacity.gpus[0]).toMatchObject({
      model: 'NVIDIA Jetson Orin',
      utilizationPercent: 42,
      stale: true,
    });
  }, 60_000);

  it('joins when nvidia-smi hangs from the start, and stays online', async () => {
    await writeFile(join(dir, 'hang'), '');
    await cluster.startEngine('wedge-start', [], withFake());
    await cluster.waitForNodes(['wedge-start'], 30_000);
    await heardThroughout('wedge-start', 8000, 3000);
  }, 60_000);
});
