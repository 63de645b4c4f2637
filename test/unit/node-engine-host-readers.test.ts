import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeOsRelease } from '../../node-engine/node-info.js';
import { readAmdGpus } from '../../node-engine/telemetry/amd-gpus.js';
import { parseCpuTimes, parseMemInfo, SystemMetrics } from '../../node-engine/telemetry/system-metrics.js';

/** What the node engine reads of its host without a library: /proc, os-release and the amdgpu driver's sysfs. */
let dir: string;

async function put(path: string, content: string): Promise<void> {
  await mkdir(dirname(join(dir, path)), { recursive: true });
  await writeFile(join(dir, path), content);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ne-host-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('/proc readers', () => {
  it('counts iowait as idle and steal as busy, and refuses a line it cannot read', () => {
    expect(parseCpuTimes('cpu  100 5 50 800 40 3 2 10 0 0\ncpu0 1 2 3 4\n')).toEqual({
      busy: 170,
      total: 1010,
    });
    expect(parseCpuTimes('cpu  1 2 3 4\n')).toEqual({ busy: 6, total: 10 });
    expect(parseCpuTimes('cpu0 1 2 3 4\n')).toBeUndefined();
    expect(parseCpuTimes('cpu  a b c d\n')).toBeUndefined();
  });

  it('takes MemTotal and MemAvailable in bytes', () => {
    const meminfo = 'MemTotal:       2048 kB\nMemFree:         100 kB\nMemAvailable:    512 kB\n';
    expect(parseMemInfo(meminfo)).toEqual({ total: 2048 * 1024, available: 512 * 1024 });
    expect(parseMemInfo('MemTotal: 2048 kB\n')).toBeUndefined();
  });

  it('gives CPU use over the time since the previous read', async () => {
    await put('proc/meminfo', 'MemTotal: 1000 kB\nMemAvailable: 250 kB\n');
    await put('proc/stat', 'cpu  100 0 100 800 0 0 0 0\n');
    const metrics = new SystemMetrics(dir, 4, join(dir, 'proc'));
    const first = await metrics.read();
    expect(first.cpu).toMatchObject({ percent: 20, cores: 4 });
    expect(first.memory).toEqual({ totalBytes: 1_024_000, usedBytes: 768_000, percent: 75 });
    expect(first.disk.totalBytes).toBeGreaterThan(0);
    // 300 more ticks, of which 270 busy: 90 %.
    await put('proc/stat', 'cpu  300 0 170 830 0 0 0 0\n');
    expect((await metrics.read()).cpu.percent).toBe(90);
    // Nothing passed: 0, not a division by zero.
    expect((await metrics.read()).cpu.percent).toBe(0);
  });

  it('reads this machine', async () => {
    const metrics = new SystemMetrics(dir, 2);
    const sample = await metrics.read();
    expect(sample.memory.totalBytes).toBeGreaterThan(0);
    expect(sample.memory.percent).toBeGreaterThan(0);
    expect(sample.cpu.percent).toBeGreaterThanOrEqual(0);
    expect(sample.cpu.percent).toBeLessThanOrEqual(100);
  });
});

describe('os-release', () => {
  it('names the distribution and its version as systeminformation did', () => {
    expect(
      describeOsRelease(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n',
      ),
    ).toBe('Debian GNU/Linux 12');
    expect(describeOsRelease("NAME='Raspbian GNU/Linux'\nVERSION_ID=11\n")).toBe('Raspbian GNU/Linux 11');
    expect(describeOsRelease('NAME=Arch Linux\n')).toBe('Arch Linux');
    expect(describeOsRelease('')).toBeUndefined();
  });
});

describe('AMD GPUs from sysfs', () => {
  it('takes cards of AMD with VRAM, with their live numbers, and leaves out the rest', async () => {
    const sys = join(dir, 'sys');
    const card = (n: number) => `sys/class/drm/card${n}/device`;
    // card0: a VM's display adapter (another vendor); card1: an AMD GPU; card2: an AMD APU without VRAM.
    await put(`${card(0)}/vendor`, '0x1234\n');
    await put(`${card(1)}/vendor`, '0x1002\n');
    await put(`${card(1)}/device`, '0x73bf\n');
    await put(`${card(1)}/mem_info_vram_total`, `${16 * 1024 ** 3}\n`);
    await put(`${card(1)}/mem_info_vram_used`, `${1024 ** 3}\n`);
    await put(`${card(1)}/gpu_busy_percent`, '37\n');
    await put(`${card(1)}/hwmon/hwmon3/temp1_input`, '54000\n');
    await put(`${card(2)}/vendor`, '0x1002\n');
    await put(`${card(2)}/mem_info_vram_total`, '0\n');
    await put('sys/class/drm/card1-DP-1/status', 'connected\n');
    expect(await readAmdGpus(sys)).toEqual([
      {
        index: 0,
        vendor: 'AMD',
        model: 'AMD GPU 0x73bf',
        memoryTotalMB: 16 * 1024,
        memoryUsedMB: 1024,
        utilizationPercent: 37,
        temperatureC: 54,
      },
    ]);
  });

  it('finds none where there is no drm class (this machine, a container)', async () => {
    expect(await readAmdGpus(join(dir, 'no-sys'))).toEqual([]);
  });
});
