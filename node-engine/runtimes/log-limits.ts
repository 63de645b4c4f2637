import { copyFile, rename, stat, truncate, unlink } from 'node:fs/promises';
import type { JobDefinition } from '../../shared/index.js';

/** How much output a workload keeps: files of at most `maxSizeMB`, `maxFiles` of them with the current one. */
export interface LogLimits {
  maxSizeMB: number;
  maxFiles: number;
}

export const DEFAULT_LOG_LIMITS: LogLimits = { maxSizeMB: 10, maxFiles: 3 };

/** The node's limits with the job's `logs` block over them. */
export function logLimitsOf(job: JobDefinition, node: LogLimits): LogLimits {
  return {
    maxSizeMB: job.logs?.maxSizeMB ?? node.maxSizeMB,
    maxFiles: job.logs?.maxFiles ?? node.maxFiles,
  };
}

/**
 * Rotates `path` when it has grown past the limit: `path.1` becomes `path.2` and so on (the oldest beyond
 * `maxFiles` goes), the file is copied to `path.1` and truncated in place. The workload keeps writing to the
 * same open file (opened with O_APPEND, it goes on at the new end), as logrotate's copytruncate does; what it
 * writes between the copy and the truncation is lost. Returns whether it rotated.
 */
export async function rotateIfLarger(path: string, limits: LogLimits): Promise<boolean> {
  const size = await stat(path).then(
    (info) => info.size,
    () => 0,
  );
  if (size <= limits.maxSizeMB * 1024 * 1024) return false;
  const kept = limits.maxFiles - 1;
  await unlink(`${path}.${kept}`).catch(() => undefined);
  for (let index = kept - 1; index >= 1; index--)
    await rename(`${path}.${index}`, `${path}.${index + 1}`).catch(() => undefined);
  if (kept >= 1) await copyFile(path, `${path}.1`);
  await truncate(path, 0);
  return true;
}
