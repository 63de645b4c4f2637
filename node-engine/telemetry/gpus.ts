import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import si from 'systeminformation';
import type { Gpu, Logger } from '../../shared/index.js';

const run = promisify(execFile);

/** The query systeminformation itself issues; one call per telemetry interval. */
export const NVIDIA_SMI_ARGS = [
  '--query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu',
  '--format=csv,noheader,nounits',
];

/** The first executable `command` on PATH, or undefined. */
export function findOnPath(command: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** `[N/A]`, `[Not Supported]` and empty fields become null. */
function numberOrNull(field: string | undefined): number | null {
  if (field === undefined) return null;
  const value = Number.parseFloat(field.trim());
  return Number.isFinite(value) ? value : null;
}

/** Parses `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` output, one GPU a line. */
export function parseNvidiaSmi(csv: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const line of csv.split('\n')) {
    if (!line.trim()) continue;
    const [index, name, total, used, utilization, temperature] = line.split(',').map((field) => field.trim());
    const position = numberOrNull(index);
    if (position === null || position < 0) continue;
    const utilizationPercent = numberOrNull(utilization);
    const memoryTotalMB = numberOrNull(total);
    const memoryUsedMB = numberOrNull(used);
    gpus.push({
      index: Math.trunc(position),
      vendor: 'NVIDIA',
      model: name ?? '',
      memoryTotalMB: memoryTotalMB === null ? null : Math.max(0, memoryTotalMB),
      memoryUsedMB: memoryUsedMB === null ? null : Math.max(0, memoryUsedMB),
      utilizationPercent: utilizationPercent === null ? null : Math.min(100, Math.max(0, utilizationPercent)),
      temperatureC: numberOrNull(temperature),
    });
  }
  return gpus;
}

export async function queryNvidiaSmi(binary: string, timeoutMs = 5000): Promise<Gpu[]> {
  const { stdout } = await run(binary, NVIDIA_SMI_ARGS, { timeout: timeoutMs, encoding: 'utf8' });
  return parseNvidiaSmi(stdout);
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The node's GPUs: taken once at start (systeminformation.graphics is far too slow to call per interval);
 * with nvidia-smi on PATH its live numbers are read once per interval instead.
 */
export class GpuMonitor {
  private constructor(
    private readonly nvidiaSmi: string | undefined,
    readonly inventory: Gpu[],
    private readonly logger: Logger,
  ) {}

  static async create(logger: Logger, inventoryTimeoutMs = 10_000): Promise<GpuMonitor> {
    const nvidiaSmi = findOnPath('nvidia-smi');
    let inventory: Gpu[] = [];
    try {
      if (nvidiaSmi) inventory = await queryNvidiaSmi(nvidiaSmi);
      else {
        const graphics = await withTimeout(si.graphics(), inventoryTimeoutMs);
        if (!graphics) logger.warn('GPU inventory timed out; announcing no GPUs');
        // Only compute GPUs count for placement: a VM's virtual display adapter is no GPU.
        inventory = (graphics?.controllers ?? [])
          .filter((c) => /nvidia|amd|advanced micro/i.test(c.vendor) && (c.vram ?? 0) > 0)
          .map((c, index) => ({
            index,
            vendor: c.vendor,
            model: c.model,
            memoryTotalMB: c.vram,
            memoryUsedMB: c.memoryUsed ?? null,
            utilizationPercent: c.utilizationGpu ?? null,
            temperatureC: c.temperatureGpu ?? null,
          }));
      }
    } catch (error) {
      logger.warn({ err: (error as Error).message }, 'GPU inventory failed; announcing no GPUs');
    }
    return new GpuMonitor(nvidiaSmi, inventory, logger);
  }

  /** Live numbers where nvidia-smi gives them, else the inventory. */
  async read(): Promise<Gpu[]> {
    if (!this.nvidiaSmi) return this.inventory;
    try {
      return await queryNvidiaSmi(this.nvidiaSmi);
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'nvidia-smi failed');
      return this.inventory;
    }
  }
}
