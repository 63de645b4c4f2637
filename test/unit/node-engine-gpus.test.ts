import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findOnPath, GpuMonitor, NVIDIA_SMI_ARGS, parseNvidiaSmi } from '../../node-engine/telemetry/gpus.js';

const OUTPUT = [
  '0, NVIDIA A100-SXM4-40GB, 40960, 1024, 37, 41',
  '1, NVIDIA GeForce RTX 3090, 24576, [N/A], [Not Supported], 55',
].join('\n');

/** The hung fake's sleep, found by this argument: nothing of a killed query may stay behind. */
const HANG_MARK = 7000 + (process.pid % 1000);
const hungLeft = () => {
  try {
    return execFileSync('pgrep', ['-f', `sleep ${HANG_MARK}`], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
};

let dir: string;
let savedPath: string | undefined;

describe('nvidia-smi', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-gpus-'));
    // A fake nvidia-smi that checks it gets the query the node engine issues and answers like the real one.
    const script = join(dir, 'nvidia-smi');
    await writeFile(
      script,
      // With a file named `hang` beside it, it wedges as a stuck driver does: it ignores SIGTERM and never answers.
      `#!/bin/sh\n[ "$*" = "${NVIDIA_SMI_ARGS.join(' ')}" ] || { echo "unexpected args: $*" >&2; exit 9; }\n` +
        `if [ -e ${dir}/hang ]; then trap '' TERM; sleep ${HANG_MARK} & wait; fi\ncat <<'OUT'\n${OUTPUT}\nOUT\n`,
    );
    await chmod(script, 0o755);
    savedPath = process.env.PATH;
    process.env.PATH = `${dir}${delimiter}${savedPath ?? ''}`;
  });
  afterAll(async () => {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  });

  it('parses the csv, with N/A fields as null', () => {
    expect(parseNvidiaSmi(OUTPUT)).toEqual([
      {
        index: 0,
        vendor: 'NVIDIA',
        model: 'NVIDIA A100-SXM4-40GB',
        memoryTotalMB: 40960,
        memoryUsedMB: 1024,
        utilizationPercent: 37,
        temperatureC: 41,
      },
      {
        index: 1,
        vendor: 'NVIDIA',
        model: 'NVIDIA GeForce RTX 3090',
        memoryTotalMB: 24576,
        memoryUsedMB: null,
        utilizationPercent: null,
        temperatureC: 55,
      },
    ]);
    expect(parseNvidiaSmi('\n')).toEqual([]);
  });

  it('finds the fake nvidia-smi on PATH and reads live numbers through it', async () => {
    expect(findOnPath('nvidia-smi')).toBe(join(dir, 'nvidia-smi'));
    const monitor = await GpuMonitor.create(pino({ level: 'silent' }));
    expect(monitor.inventory).toHaveLength(2);
    const live = await monitor.read(1000, 5000);
    expect(live[0]).toMatchObject({ index: 0, utilizationPercent: 37, memoryUsedMB: 1024 });
    expect(live[0]?.stale).toBeUndefined();
  });

  it('never waits for one that starts to hang: the last numbers, marked stale; the query killed at its deadline', async () => {
    const monitor = await GpuMonitor.create(pino({ level: 'silent' }));
    expect((await monitor.read(1000, 5000))[0]?.stale).toBeUndefined();
    await writeFile(join(dir, 'hang'), '');
    try {
      const started = Date.now();
      const read = await monitor.read(200, 0);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(read[0]).toMatchObject({ index: 0, utilizationPercent: 37, stale: true });
      expect(hungLeft()).not.toBe('');
      // Asked again while the hung query runs: no second one is started.
      await monitor.read(200, 0);
      expect(hungLeft().split('\n')).toHaveLength(1);
      // SIGKILL to its process group at the 5 s deadline: nothing of it stays.
      await new Promise((resolve) => setTimeout(resolve, 5500));
      expect(hungLeft()).toBe('');
    } finally {
      await rm(join(dir, 'hang'), { force: true });
    }
  }, 15_000);

  it('comes up within the deadline when it hangs from the start, announcing no GPUs, and leaves nothing behind', async () => {
    await writeFile(join(dir, 'hang'), '');
    try {
      const started = Date.now();
      const monitor = await GpuMonitor.create(pino({ level: 'silent' }));
      expect(Date.now() - started).toBeLessThan(8000);
      expect(monitor.inventory).toEqual([]);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(hungLeft()).toBe('');
    } finally {
      await rm(join(dir, 'hang'), { force: true });
    }
  }, 15_000);
});
