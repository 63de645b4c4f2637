import { availableParallelism, totalmem } from 'node:os';
import si from 'systeminformation';
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

async function describeOs(): Promise<string> {
  try {
    const os = await si.osInfo();
    return [os.distro, os.release].filter(Boolean).join(' ') || os.platform;
  } catch {
    return process.platform;
  }
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
