import { readFile, statfs } from 'node:fs/promises';
import { freemem, loadavg, totalmem } from 'node:os';
import type { NodeTelemetry } from '../../shared/index.js';

function percent(part: number, whole: number): number {
  return whole > 0 ? Math.round((part / whole) * 10_000) / 100 : 0;
}

/** CPU time counters of the whole machine (the `cpu` line of /proc/stat), in clock ticks. */
interface CpuTimes {
  busy: number;
  total: number;
}

/** Parses the `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal (guest is in user). */
export function parseCpuTimes(stat: string): CpuTimes | undefined {
  const line = stat.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return undefined;
  const [user, nice, system, idle, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  if ([user, nice, system, idle].some((n) => n === undefined || !Number.isFinite(n))) return undefined;
  const idleAll = idle! + iowait;
  const total = user! + nice! + system! + idleAll + irq + softirq + steal;
  return { busy: total - idleAll, total };
}

/** `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes. */
export function parseMemInfo(meminfo: string): { total: number; available: number } | undefined {
  const kib = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(meminfo)?.[1] ?? Number.NaN);
  const total = kib('MemTotal');
  const available = kib('MemAvailable');
  if (!Number.isFinite(total) || !Number.isFinite(available)) return undefined;
  return { total: total * 1024, available: available * 1024 };
}

/**
 * The machine's CPU, memory and disk, read from /proc and statfs (no process spawned, no library). CPU use is
 * over the time since the previous read (the first read: since boot).
 */
export class SystemMetrics {
  private last: CpuTimes = { busy: 0, total: 0 };

  constructor(
    private readonly dataDir: string,
    private readonly cores: number,
    private readonly proc = '/proc',
  ) {}

  async read(): Promise<Pick<NodeTelemetry, 'cpu' | 'memory' | 'disk'>> {
    // statfs of the data dir: exactly its filesystem.
    const [stat, meminfo, disk] = await Promise.all([
      readFile(`${this.proc}/stat`, 'utf8').catch(() => ''),
      readFile(`${this.proc}/meminfo`, 'utf8').catch(() => ''),
      statfs(this.dataDir),
    ]);
    const times = parseCpuTimes(stat);
    let cpuPercent = 0;
    if (times) {
      const total = times.total - this.last.total;
      cpuPercent = total > 0 ? percent(times.busy - this.last.busy, total) : 0;
      this.last = times;
    }
    // Elsewhere than Linux: Node's own figures (free, not available, memory).
    const memory = parseMemInfo(meminfo) ?? { total: totalmem(), available: freemem() };
    const usedBytes = memory.total - memory.available;
    const diskTotal = disk.blocks * disk.bsize;
    const diskUsed = (disk.blocks - disk.bfree) * disk.bsize;
    return {
      cpu: {
        percent: Math.min(100, Math.max(0, cpuPercent)),
        cores: this.cores,
        load1: Math.max(0, loadavg()[0] ?? 0),
      },
      memory: { totalBytes: memory.total, usedBytes, percent: percent(usedBytes, memory.total) },
      disk: { totalBytes: diskTotal, usedBytes: diskUsed, percent: percent(diskUsed, diskTotal) },
    };
  }
}
