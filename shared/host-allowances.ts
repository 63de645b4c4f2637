import { posix } from 'node:path';
import { z } from 'zod';

/**
 * What a node lets jobs use of its host (`--allow-native`, `--allow-device`): paths, each exact or, ending in
 * `/`, a folder and everything under it. A node allows nothing it was not told to: a job of its cluster's
 * operators must not become root on every worker by default.
 */
export interface HostAllowances {
  /** Executables `technology: native` jobs may run. */
  native: string[];
  /** Host devices (`devices`) containers may get. */
  devices: string[];
}

/** An absolute path with no `.`, `..` or doubled slashes in it: what allow-lists hold and match. */
export function isPlainAbsolutePath(path: string): boolean {
  return path.startsWith('/') && (posix.normalize(path) === path || `${posix.normalize(path)}/` === path);
}

const AllowedPath = z.string().max(4096).refine(isPlainAbsolutePath, 'an absolute path without . or ..');
export const HostAllowancesSchema = z.object({
  native: z.array(AllowedPath).max(100),
  devices: z.array(AllowedPath).max(100),
});

/** Whether `path` is on the list: listed as is, or under a listed folder. */
export function pathAllowed(allowed: readonly string[], path: string): boolean {
  if (!isPlainAbsolutePath(path) || path.endsWith('/')) return false;
  return allowed.some((entry) => (entry.endsWith('/') ? path.startsWith(entry) : path === entry));
}

/** Why a node with these allowances must not run the job, in words with the flag to set; null when it may. */
export function refusedByAllowances(
  job: { technology: string; image: string; devices: readonly string[] },
  allowed: HostAllowances,
): string | null {
  if (job.technology === 'native' && !pathAllowed(allowed.native, job.image))
    return `native ${job.image} not allowed (--allow-native)`;
  const device = job.devices.find((path) => !pathAllowed(allowed.devices, path));
  return device === undefined ? null : `device ${device} not allowed (--allow-device)`;
}
