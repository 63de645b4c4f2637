import { statfs } from 'node:fs/promises';
import { loadavg } from 'node:os';
import si from 'systeminformation';
import type { NodeTelemetry } from '../../shared/index.js';

function percent(part: number, whole: number): number {
  return whole > 0 ? Math.round((part / whole) * 10_000) / 100 : 0;
}

/** CPU, memory and disk of this machine; `cores` is read once by the caller. */
export async function readSystemMetrics(
  dataDir: string,
  cores: number,
): Promise<Pick<NodeTelemetry, 'cpu' | 'memory' | 'disk'>> {
  // statfs of the data dir: exactly its filesystem, with no `df` process per interval (si.fsSize spawns one).
  const [load, memory, disk] = await Promise.all([si.currentLoad(), si.mem(), statfs(dataDir)]);
  const usedBytes = memory.total - memory.available;
  const diskTotal = disk.blocks * disk.bsize;
  const diskUsed = (disk.blocks - disk.bfree) * disk.bsize;
  return {
    cpu: {
      percent: Math.max(0, Math.round(load.currentLoad * 100) / 100),
      cores,
      load1: Math.max(0, loadavg()[0] ?? 0),
    },
    memory: { totalBytes: memory.total, usedBytes, percent: percent(usedBytes, memory.total) },
    disk: { totalBytes: diskTotal, usedBytes: diskUsed, percent: percent(diskUsed, diskTotal) },
  };
}
