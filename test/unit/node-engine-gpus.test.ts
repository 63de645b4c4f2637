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

let dir: string;
let savedPath: string | undefined;

describe('nvidia-smi', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-gpus-'));
    // A fake nvidia-smi that checks it gets the query systeminformation issues and answers like the real one.
    const script = join(dir, 'nvidia-smi');
    await writeFile(
      script,
      `#!/bin/sh\n[ "$*" = "${NVIDIA_SMI_ARGS.join(' ')}" ] || { echo "unexpected args: $*" >&2; exit 9; }\ncat <<'OUT'\n${OUTPUT}\nOUT\n`,
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
    const live = await monitor.read();
    expect(live[0]).toMatchObject({ index: 0, utilizationPercent: 37, memoryUsedMB: 1024 });
  });
});
