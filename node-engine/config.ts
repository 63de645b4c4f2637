import { hostname } from 'node:os';
import {
  type HostAllowances,
  isPlainAbsolutePath,
  type OptionSpecs,
  type ParsedOptions,
  resolveDataDir,
  TECHNOLOGIES,
  type Technology,
} from '../shared/index.js';
import type { LogLimits } from './runtimes/log-limits.js';

/** The flags of CONTRACT.md, with their env vars and defaults. */
export const optionSpecs = {
  'cluster-manager': {
    env: 'CLUSTER_MANAGER_URL',
    description: 'cluster manager URL',
    type: 'string',
    default: 'https://127.0.0.1:10100',
  },
  'ca-file': {
    env: 'NE_CA_FILE',
    description: "the cluster CA (PEM) to verify the cluster manager with, instead of the join token's pin",
    type: 'string',
  },
  'join-token': {
    env: 'JOIN_TOKEN',
    description: 'join token, required on first registration',
    type: 'string',
  },
  name: { env: 'NODE_NAME', description: 'node name (default: host name)', type: 'string' },
  'data-dir': {
    env: 'NE_DATA_DIR',
    description: 'identity and local desired state',
    type: 'string',
    default: 'var/node-engine',
  },
  'telemetry-interval': {
    env: 'NE_TELEMETRY_MS',
    description: "telemetry interval in ms (default: the cluster manager's)",
    type: 'integer',
  },
  sensors: { env: 'NE_SENSORS_FILE', description: 'YAML list of attached sensors', type: 'string' },
  runtimes: {
    env: 'NE_RUNTIMES',
    description: 'runtimes to offer, comma-separated',
    type: 'string',
    default: 'docker,native',
  },
  'docker-socket': {
    env: 'DOCKER_SOCKET',
    description: 'Docker engine socket',
    type: 'string',
    default: '/var/run/docker.sock',
  },
  port: { env: 'NE_PORT', description: 'local info API port on 127.0.0.1', type: 'integer', default: 3000 },
  labels: {
    env: 'NE_LABELS',
    description: 'node labels k=v,k2=v2 for placement constraints',
    type: 'string',
  },
  'allow-native': {
    env: 'NE_ALLOW_NATIVE',
    description:
      'executables native jobs may run, comma-separated absolute paths (a folder ends in /); none by default',
    type: 'string',
  },
  'allow-device': {
    env: 'NE_ALLOW_DEVICE',
    description:
      'host devices containers may get, comma-separated (/dev/ttyUSB0, /dev/snd/); none by default',
    type: 'string',
  },
  'native-user': {
    env: 'NE_NATIVE_USER',
    description: 'the user native jobs run as when the node engine runs as root',
    type: 'string',
    default: 'nobody',
  },
  'log-max-size-mb': {
    env: 'NE_LOG_MAX_SIZE_MB',
    description:
      "size of a workload's output file before it is rotated (a job's logs.maxSizeMB overrides it)",
    type: 'integer',
    default: 10,
  },
  'log-max-files': {
    env: 'NE_LOG_MAX_FILES',
    description:
      "output files kept per workload, the current one included (a job's logs.maxFiles overrides it)",
    type: 'integer',
    default: 3,
  },
  'image-gc-high-percent': {
    env: 'NE_IMAGE_GC_HIGH_PERCENT',
    description: "remove unused images when Docker's disk is fuller than this (percent)",
    type: 'integer',
    default: 85,
  },
  'image-gc-low-percent': {
    env: 'NE_IMAGE_GC_LOW_PERCENT',
    description: '... until it is at most this full (percent)',
    type: 'integer',
    default: 80,
  },
  'net-manager': {
    env: 'NE_NET_MANAGER_SOCKET',
    description: 'net manager socket',
    type: 'string',
    default: 'var/net-manager/net-manager.sock',
  },
} satisfies OptionSpecs;

export interface NodeEngineConfig {
  clusterManagerUrl: string;
  joinToken: string | undefined;
  caFile: string | undefined;
  name: string;
  dataDir: string;
  telemetryIntervalMs: number | undefined;
  sensorsFile: string | undefined;
  runtimes: Technology[];
  dockerSocket: string;
  port: number;
  labels: Record<string, string>;
  netManagerSocket: string;
  /** `--allow-native`, `--allow-device`: what jobs may use of this host. */
  allowed: HostAllowances;
  /** `--native-user`: who native jobs run as (when this process is root). */
  nativeUser: string;
  /** `--log-max-size-mb`, `--log-max-files`: how much output each workload keeps on disk. */
  logLimits: LogLimits;
  /** `--image-gc-high-percent`, `--image-gc-low-percent`: when unused images go, and until when. */
  imageGc: { highPercent: number; lowPercent: number };
}

/** A flag value that parses but makes no sense; the program prints it in one line and exits 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;

export function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (!text) return labels;
  for (const pair of text.split(',')) {
    const at = pair.indexOf('=');
    const key = pair.slice(0, at).trim();
    if (at <= 0 || !key || key.length > 253 || pair.length - at - 1 > 253) {
      throw new ConfigError(`--labels: "${pair}" is not k=v (expected k=v,k2=v2)`);
    }
    labels[key] = pair.slice(at + 1).trim();
  }
  return labels;
}

function parseAllowList(flag: string, text: string | undefined): string[] {
  const paths = (text ?? '')
    .split(',')
    .map((path) => path.trim())
    .filter(Boolean);
  for (const path of paths)
    if (!isPlainAbsolutePath(path))
      throw new ConfigError(
        `--${flag}: "${path}" is not an absolute path without . or .. (a folder ends in /)`,
      );
  if (paths.length > 100) throw new ConfigError(`--${flag}: at most 100 paths`);
  return paths;
}

function parseRuntimes(text: string): Technology[] {
  const names = text
    .split(',')
    .map((name) => name.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!(TECHNOLOGIES as readonly string[]).includes(name)) {
      throw new ConfigError(`--runtimes: unknown runtime "${name}" (known: ${TECHNOLOGIES.join(', ')})`);
    }
  }
  return [...new Set(names)] as Technology[];
}

export function buildConfig(options: ParsedOptions<typeof optionSpecs>): NodeEngineConfig {
  const name = options.name ?? hostname();
  if (!NAME_PATTERN.test(name)) throw new ConfigError(`--name: "${name}" is not a valid host name`);
  try {
    new URL(options['cluster-manager']);
  } catch {
    throw new ConfigError(`--cluster-manager: "${options['cluster-manager']}" is not a URL`);
  }
  const interval = options['telemetry-interval'];
  if (interval !== undefined && interval < 100)
    throw new ConfigError('--telemetry-interval must be at least 100 ms');
  if (options.port > 65535) throw new ConfigError('--port must be at most 65535');
  if (options['log-max-size-mb'] < 1) throw new ConfigError('--log-max-size-mb must be at least 1');
  if (options['log-max-files'] < 1) throw new ConfigError('--log-max-files must be at least 1');
  const high = options['image-gc-high-percent'];
  const low = options['image-gc-low-percent'];
  if (high > 100 || low >= high)
    throw new ConfigError(
      '--image-gc-low-percent must be below --image-gc-high-percent, which is at most 100',
    );
  return {
    clusterManagerUrl: options['cluster-manager'].replace(/\/+$/, ''),
    joinToken: options['join-token'],
    caFile: options['ca-file'],
    name,
    dataDir: resolveDataDir(options['data-dir']),
    telemetryIntervalMs: interval,
    sensorsFile: options.sensors,
    runtimes: parseRuntimes(options.runtimes),
    dockerSocket: options['docker-socket'],
    port: options.port,
    labels: parseLabels(options.labels),
    netManagerSocket: resolveDataDir(options['net-manager']),
    allowed: {
      native: parseAllowList('allow-native', options['allow-native']),
      devices: parseAllowList('allow-device', options['allow-device']),
    },
    nativeUser: options['native-user'],
    logLimits: { maxSizeMB: options['log-max-size-mb'], maxFiles: options['log-max-files'] },
    imageGc: { highPercent: high, lowPercent: low },
  };
}
