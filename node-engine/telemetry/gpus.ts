import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Gpu, Logger } from '../../shared/index.js';
import { withDeadline } from '../deadline.js';
import { readAmdGpus } from './amd-gpus.js';
import { runProgram } from './run-program.js';
import { Sampler } from './sampler.js';

/** nvidia-smi answers in well under a second; one that takes longer is wedged and is killed. */
const NVIDIA_SMI_TIMEOUT_MS = 5000;

/** One call per telemetry interval. */
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

/** One nvidia-smi query; killed (with whatever it started) and rejected after `timeoutMs`. */
export async function queryNvidiaSmi(binary: string, timeoutMs = NVIDIA_SMI_TIMEOUT_MS): Promise<Gpu[]> {
  const stdout = await withDeadline('nvidia-smi', timeoutMs, (signal) =>
    runProgram(binary, NVIDIA_SMI_ARGS, signal),
  );
  return parseNvidiaSmi(stdout);
}

/**
 * The node's GPUs: taken once at start (nvidia-smi's, else AMD's from sysfs, `amd-gpus.ts`); with nvidia-smi
 * on PATH its live numbers are read in the background, one query at a time, so that a wedged
 * driver never holds back a telemetry message: it carries the last numbers read, marked `stale`.
 */
export class GpuMonitor {
  private readonly live: Sampler<Gpu[]> | undefined;

  private constructor(
    nvidiaSmi: string | undefined,
    readonly inventory: Gpu[],
    logger: Logger,
  ) {
    let failing = false;
    this.live =
      nvidiaSmi === undefined
        ? undefined
        : new Sampler(
            'nvidia-smi',
            async (signal) => {
              const gpus = parseNvidiaSmi(await runProgram(nvidiaSmi, NVIDIA_SMI_ARGS, signal));
              failing = false;
              return gpus;
            },
            NVIDIA_SMI_TIMEOUT_MS,
            inventory,
            (error) => {
              // Said once per spell of failures: a wedged driver fails every interval.
              if (!failing) logger.warn({ err: error.message }, 'nvidia-smi failed; GPU values are stale');
              failing = true;
            },
          );
  }

  static async create(logger: Logger, inventoryTimeoutMs = 10_000): Promise<GpuMonitor> {
    const nvidiaSmi = findOnPath('nvidia-smi');
    let inventory: Gpu[] = [];
    try {
      if (nvidiaSmi) inventory = await queryNvidiaSmi(nvidiaSmi);
      else {
        const amd = await withDeadline('GPU inventory', inventoryTimeoutMs, () => readAmdGpus()).catch(
          () => undefined,
        );
        if (!amd) logger.warn('GPU inventory timed out; announcing no GPUs');
        inventory = amd ?? [];
      }
    } catch (error) {
      logger.warn({ err: (error as Error).message }, 'GPU inventory failed; announcing no GPUs');
    }
    return new GpuMonitor(nvidiaSmi, inventory, logger);
  }

  /**
   * Live numbers where nvidia-smi gives them (each GPU marked `stale` when no query came back within
   * `maxAgeMs`), else the inventory. Waits for nvidia-smi `waitMs` at most.
   */
  async read(waitMs: number, maxAgeMs: number): Promise<Gpu[]> {
    if (!this.live) return this.inventory;
    const { value, stale } = await this.live.sample(waitMs, maxAgeMs);
    return stale ? value.map((gpu) => ({ ...gpu, stale: true })) : value;
  }
}
