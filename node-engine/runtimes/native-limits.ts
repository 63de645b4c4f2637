import { existsSync } from 'node:fs';
import { mkdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Resources } from '../../shared/index.js';
import { findOnPath } from '../telemetry/gpus.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
const GROUP = 'edge-node-engine';
const CPU_PERIOD_US = 100_000;

/** How a native process gets its limits: files it writes its pid into before exec, or a prlimit prefix. */
export interface LimitPlan {
  /** `cgroup.procs` files the process joins before it execs the workload. */
  cgroupProcs: string[];
  /** Cgroup folders to remove with the workload. */
  cgroupDirs: string[];
  /** A command prefix (`prlimit --as=... --`) when cgroups are not writable. */
  prefix: string[];
  /** Limits asked but not enforced here, for the log. */
  unenforced: string[];
}

export function cgroupVersion(root = CGROUP_ROOT): 1 | 2 | undefined {
  if (existsSync(join(root, 'cgroup.controllers'))) return 2;
  if (existsSync(join(root, 'memory')) || existsSync(join(root, 'pids'))) return 1;
  return undefined;
}

async function cgroupV1(root: string, name: string, resources: Resources): Promise<LimitPlan> {
  const plan: LimitPlan = { cgroupProcs: [], cgroupDirs: [], prefix: [], unenforced: [] };
  const settings: Array<[string, Array<[string, string]>]> = [];
  if (resources.cpus !== undefined) {
    const quota = String(Math.max(1000, Math.round(resources.cpus * CPU_PERIOD_US)));
    settings.push([
      'cpu',
      [
        ['cpu.cfs_period_us', String(CPU_PERIOD_US)],
        ['cpu.cfs_quota_us', quota],
      ],
    ]);
  }
  if (resources.memoryMB !== undefined) {
    settings.push(['memory', [['memory.limit_in_bytes', String(resources.memoryMB * 1024 * 1024)]]]);
  }
  if (resources.pids !== undefined) settings.push(['pids', [['pids.max', String(resources.pids)]]]);
  for (const [controller, files] of settings) {
    const dir = join(root, controller, GROUP, name);
    await mkdir(dir, { recursive: true });
    plan.cgroupDirs.push(dir);
    for (const [file, value] of files) await writeFile(join(dir, file), value);
    plan.cgroupProcs.push(join(dir, 'cgroup.procs'));
  }
  return plan;
}

async function cgroupV2(root: string, name: string, resources: Resources): Promise<LimitPlan> {
  const parent = join(root, GROUP);
  const dir = join(parent, name);
  await mkdir(dir, { recursive: true });
  // Controllers must be enabled on every level above the group that uses them.
  for (const level of [root, parent]) {
    await writeFile(join(level, 'cgroup.subtree_control'), '+cpu +memory +pids').catch(() => undefined);
  }
  if (resources.cpus !== undefined) {
    await writeFile(join(dir, 'cpu.max'), `${Math.round(resources.cpus * CPU_PERIOD_US)} ${CPU_PERIOD_US}`);
  }
  if (resources.memoryMB !== undefined) {
    await writeFile(join(dir, 'memory.max'), String(resources.memoryMB * 1024 * 1024));
  }
  if (resources.pids !== undefined) await writeFile(join(dir, 'pids.max'), String(resources.pids));
  return { cgroupProcs: [join(dir, 'cgroup.procs')], cgroupDirs: [dir], prefix: [], unenforced: [] };
}

/** prlimit cannot cap CPU share; memory becomes an address-space limit, pids a process-count limit. */
function prlimitPlan(resources: Resources): LimitPlan {
  const plan: LimitPlan = { cgroupProcs: [], cgroupDirs: [], prefix: [], unenforced: [] };
  const prlimit = findOnPath('prlimit');
  const args: string[] = [];
  if (resources.memoryMB !== undefined) args.push(`--as=${resources.memoryMB * 1024 * 1024}`);
  if (resources.pids !== undefined) args.push(`--nproc=${resources.pids}`);
  if (resources.cpus !== undefined) plan.unenforced.push('cpus');
  if (args.length > 0 && prlimit) plan.prefix = [prlimit, ...args, '--'];
  else if (args.length > 0) plan.unenforced.push('memoryMB', 'pids');
  return plan;
}

/**
 * Prepares the limits of one native workload: cgroups (v1 or v2) when writable, prlimit otherwise. `root` is the
 * cgroup filesystem (tests hand a tree of their own).
 */
export async function planLimits(name: string, resources: Resources, root = CGROUP_ROOT): Promise<LimitPlan> {
  const asked =
    resources.cpus !== undefined || resources.memoryMB !== undefined || resources.pids !== undefined;
  if (!asked) return { cgroupProcs: [], cgroupDirs: [], prefix: [], unenforced: [] };
  const version = cgroupVersion(root);
  try {
    if (version === 1) return await cgroupV1(root, name, resources);
    if (version === 2) return await cgroupV2(root, name, resources);
  } catch {
    // Not writable (no root, a read-only cgroupfs in a container): prlimit is the fallback.
  }
  return prlimitPlan(resources);
}

export async function releaseLimits(dirs: string[]): Promise<void> {
  for (const dir of dirs) await rmdir(dir).catch(() => undefined);
}
