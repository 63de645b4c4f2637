import type { OptionSpecs, ParsedOptions } from '../shared/options.js';

/** The flags of edge-fleet-sim, each with its FLEET_* env var. */
export const optionSpecs = {
  'cluster-manager': {
    env: 'FLEET_CLUSTER_MANAGER',
    description: 'cluster manager URL (required)',
    type: 'string',
  },
  'join-token': { env: 'FLEET_JOIN_TOKEN', description: 'join token (required)', type: 'string' },
  'ca-file': {
    env: 'FLEET_CA_FILE',
    description: "the cluster CA (PEM), instead of the join token's pin",
    type: 'string',
  },
  workers: { env: 'FLEET_WORKERS', description: 'hollow workers to run', type: 'integer', default: 100 },
  'connect-rate': {
    env: 'FLEET_CONNECT_RATE',
    description: 'registrations per second, at most',
    type: 'integer',
    default: 200,
  },
  'telemetry-interval': {
    env: 'FLEET_TELEMETRY_MS',
    description: 'telemetry interval in ms',
    type: 'integer',
    default: 2000,
  },
  'start-delay-ms': {
    env: 'FLEET_START_DELAY_MS',
    description: 'from a deploy to its `running` report',
    type: 'integer',
    default: 0,
  },
  'name-prefix': {
    env: 'FLEET_NAME_PREFIX',
    description: 'worker names are <prefix>-00042',
    type: 'string',
    default: 'hollow',
  },
  identities: {
    env: 'FLEET_IDENTITIES',
    description: "JSON file keeping the workers' node ids and secrets across runs (default: memory only)",
    type: 'string',
  },
  'no-job-resources': {
    env: 'FLEET_NO_JOB_RESOURCES',
    description: 'do not publish nodes/<id>/jobs/resources (a real node does, every interval)',
    type: 'boolean',
    default: false,
  },
  'report-every': {
    env: 'FLEET_REPORT_EVERY_S',
    description: 'seconds between JSON stats lines on stdout (0: none)',
    type: 'integer',
    default: 5,
  },
  duration: {
    env: 'FLEET_DURATION_S',
    description: 'seconds to run (0: until SIGINT/SIGTERM)',
    type: 'integer',
    default: 0,
  },
} satisfies OptionSpecs;

export interface FleetConfig {
  clusterManagerUrl: string;
  joinToken: string;
  caFile: string | undefined;
  /** The cluster CA once trusted (main sets it before the fleet starts); undefined: plain text or system CAs. */
  clusterCa?: string;
  workers: number;
  connectRate: number;
  telemetryIntervalMs: number;
  startDelayMs: number;
  namePrefix: string;
  identitiesFile: string | undefined;
  jobResources: boolean;
  reportEveryMs: number;
  durationMs: number;
}

/** A flag value that parses but makes no sense; main prints it in one line and exits 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Node names as the cluster manager accepts them (NodeInfoSchema). */
const NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;
const MAX_WORKERS = 100_000;

/** `hollow-00042`: zero-padded so names sort, at least five digits. */
export function workerName(prefix: string, index: number, workers: number): string {
  const width = Math.max(5, String(workers - 1).length);
  return `${prefix}-${String(index).padStart(width, '0')}`;
}

export function buildConfig(options: ParsedOptions<typeof optionSpecs>): FleetConfig {
  const url = options['cluster-manager'];
  if (!url) throw new ConfigError('--cluster-manager is required (or FLEET_CLUSTER_MANAGER)');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`--cluster-manager: "${url}" is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ConfigError(`--cluster-manager: "${url}" must be http:// or https://`);
  }
  const joinToken = options['join-token'];
  if (!joinToken) throw new ConfigError('--join-token is required (or FLEET_JOIN_TOKEN)');
  if (options.workers < 1 || options.workers > MAX_WORKERS) {
    throw new ConfigError(`--workers must be between 1 and ${MAX_WORKERS}`);
  }
  if (options['connect-rate'] < 1) throw new ConfigError('--connect-rate must be at least 1');
  if (options['telemetry-interval'] < 100) {
    throw new ConfigError('--telemetry-interval must be at least 100 ms');
  }
  const prefix = options['name-prefix'];
  if (!NAME_PATTERN.test(workerName(prefix, 0, options.workers))) {
    throw new ConfigError(`--name-prefix: "${prefix}-00000" is not a valid host name`);
  }
  return {
    clusterManagerUrl: url.replace(/\/+$/, ''),
    joinToken,
    caFile: options['ca-file'],
    workers: options.workers,
    connectRate: options['connect-rate'],
    telemetryIntervalMs: options['telemetry-interval'],
    startDelayMs: options['start-delay-ms'],
    namePrefix: prefix,
    identitiesFile: options.identities,
    jobResources: !options['no-job-resources'],
    reportEveryMs: options['report-every'] * 1000,
    durationMs: options.duration * 1000,
  };
}
