import { readFile } from 'node:fs/promises';
import { availableParallelism, release, totalmem } from 'node:os';
import {
  type Gpu,
  type HostAllowances,
  type NodeInfo,
  type Sensor,
  type Technology,
  VERSION,
} from '../shared/index.js';

/** Node's `process.arch` in the start-up names the cluster manager places by. */
export function mapArch(arch: string): NodeInfo['arch'] | undefined {
  if (arch === 'x64') return 'amd64';
  if (arch === 'arm64') return 'arm64';
  if (arch === 'arm') return 'arm-7';
  return undefined;
}

/** The distribution's name and version from os-release (e.g. `Debian GNU/Linux 12`), else the kernel's. */
export function describeOsRelease(osRelease: string): string | undefined {
  const field = (name: string) => {
    const value = new RegExp(`^${name}=(.*)$`, 'm').exec(osRelease)?.[1]?.trim();
    return value?.replace(/^(["'])(.*)\1$/, '$2') || undefined;
  };
  const name = field('NAME');
  return name ? [name, field('VERSION_ID')].filter(Boolean).join(' ') : undefined;
}

async function describeOs(): Promise<string> {
  for (const file of ['/etc/os-release', '/usr/lib/os-release']) {
    const described = describeOsRelease(await readFile(file, 'utf8').catch(() => ''));
    if (described) return described;
  }
  return `${process.platform} ${release()}`;
}

export interface NodeInfoInputs {
  name: string;
  gpus: Gpu[];
  sensors: Sensor[];
  runtimes: Technology[];
  labels: Record<string, string>;
  overlay: boolean;
  allowed: HostAllowances;
}

/** What the node announces with `register`; facts that do not change while it runs are read once. */
export async function collectNodeInfo(inputs: NodeInfoInputs): Promise<NodeInfo> {
  const arch = mapArch(process.arch);
  if (!arch) throw new Error(`unsupported architecture ${process.arch} (supported: amd64, arm64, arm-7)`);
  return {
    name: inputs.name,
    arch,
    os: await describeOs(),
    cpus: availableParallelism(),
    memoryBytes: totalmem(),
    gpus: inputs.gpus,
    sensors: inputs.sensors,
    runtimes: inputs.runtimes,
    labels: inputs.labels,
    version: VERSION,
    overlay: inputs.overlay,
    allowed: inputs.allowed,
  };
}
