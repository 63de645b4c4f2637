import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Gpu } from '../../shared/index.js';

/** PCI vendor id of AMD (ATI) in sysfs. */
const AMD_VENDOR = '0x1002';

async function readText(file: string): Promise<string | undefined> {
  return (await readFile(file, 'utf8').catch(() => undefined))?.trim();
}

async function readNumber(file: string): Promise<number | null> {
  const text = await readText(file);
  const value = text === undefined ? Number.NaN : Number(text);
  return Number.isFinite(value) ? value : null;
}

const mib = (bytes: number | null) => (bytes === null ? null : Math.round(bytes / 1024 / 1024));

/**
 * AMD GPUs as the amdgpu driver shows them in sysfs (what rocm-smi reads): each `card<N>` whose device is AMD's
 * and has VRAM. A display adapter without VRAM of its own (an APU's, a VM's) is no compute GPU. NVIDIA GPUs come
 * from nvidia-smi instead. `sys`: the sysfs root (tests give a tree of their own).
 */
export async function readAmdGpus(sys = '/sys'): Promise<Gpu[]> {
  const drm = join(sys, 'class/drm');
  const cards = (await readdir(drm).catch(() => [] as string[]))
    .filter((name) => /^card\d+$/.test(name))
    .sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  const gpus: Gpu[] = [];
  for (const card of cards) {
    const device = join(drm, card, 'device');
    if ((await readText(join(device, 'vendor'))) !== AMD_VENDOR) continue;
    const memoryTotalMB = mib(await readNumber(join(device, 'mem_info_vram_total')));
    if (!memoryTotalMB) continue;
    const hwmons = await readdir(join(device, 'hwmon')).catch(() => [] as string[]);
    const milliC = hwmons[0] ? await readNumber(join(device, 'hwmon', hwmons[0], 'temp1_input')) : null;
    const deviceId = (await readText(join(device, 'device'))) ?? 'unknown';
    gpus.push({
      index: gpus.length,
      vendor: 'AMD',
      model: (await readText(join(device, 'product_name'))) || `AMD GPU ${deviceId}`,
      memoryTotalMB,
      memoryUsedMB: mib(await readNumber(join(device, 'mem_info_vram_used'))),
      utilizationPercent: await readNumber(join(device, 'gpu_busy_percent')),
      temperatureC: milliC === null ? null : milliC / 1000,
    });
  }
  return gpus;
}
