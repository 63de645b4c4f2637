import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ClusterManager } from '../../cluster-manager/cluster-manager.js';
import type { ClusterManagerConfig } from '../../cluster-manager/config.js';
import { parseAddressPlan } from '../../cluster-manager/network/address-plan.js';
import { trustedFetch } from '../../shared/index.js';

export interface RunningClusterManager {
  manager: ClusterManager;
  url: string;
  mqttUrl: string;
  apiToken: string;
  /** The read-only token: the MQTT `operator` login's password. */
  telemetryToken: string;
  joinToken: string;
  dataDir: string;
  /** The cluster CA (PEM); undefined for one started with `insecure: true`. */
  ca?: string;
  /** `fetch` that trusts the cluster CA. */
  fetch: typeof fetch;
  api(path: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/**
 * A cluster manager in this process on random loopback ports, with its own data dir. `workerSubnets` and
 * `serviceSubnet` are the flags' values, made into the address plan.
 */
export async function startClusterManager(
  overrides: Partial<ClusterManagerConfig> & {
    workerSubnets?: string;
    serviceSubnet?: string;
    /** Collects the cluster manager's log lines (pino JSON, info and up) for a test to read. */
    logLines?: string[];
  } = {},
): Promise<RunningClusterManager> {
  const {
    workerSubnets = '10.18.0.0-10.29.255.255',
    serviceSubnet = '10.30.0.0/16',
    logLines,
    ...rest
  } = overrides;
  const dataDir = overrides.dataDir ?? mkdtempSync(join(tmpdir(), 'edge-cm-'));
  const config: ClusterManagerConfig = {
    httpPort: 0,
    host: '127.0.0.1',
    mqttPort: 0,
    dataDir,
    nodeTimeoutMs: 6000,
    telemetryIntervalMs: 2000,
    insecure: false,
    overlayPlaintext: false,
    rendezvousPort: 0,
    tlsSans: [],
    registrationRatePerS: 50,
    maxStreams: 256,
    mqttDynsec: false,
    addressPlan: parseAddressPlan(workerSubnets, serviceSubnet),
    ...rest,
  };
  const logger = logLines
    ? pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) })
    : pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const manager = new ClusterManager(config, logger);
  const { httpPort, mqttUrl } = await manager.start();
  const url = `${manager.tls ? 'https' : 'http'}://127.0.0.1:${httpPort}`;
  const trusting = trustedFetch(manager.tls?.ca);
  return {
    manager,
    url,
    mqttUrl,
    apiToken: manager.apiToken,
    telemetryToken: manager.telemetryToken,
    joinToken: manager.joinToken,
    dataDir,
    ca: manager.tls?.ca,
    fetch: trusting,
    api(path, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${manager.apiToken}`);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set('content-type', 'application/json');
        body = JSON.stringify(init.json);
      }
      return trusting(`${url}${path}`, { ...init, headers, body });
    },
    async stop(options = {}) {
      await manager.stop();
      if (!options.keepData && !overrides.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
