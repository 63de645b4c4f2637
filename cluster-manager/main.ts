#!/usr/bin/env node
import { createLogger } from '../shared/index.js';
import { ClusterManager } from './cluster-manager.js';
import { readClusterManagerConfig } from './config.js';

const config = readClusterManagerConfig();
const logger = createLogger('cluster-manager');
const manager = new ClusterManager(config, logger);

try {
  const { httpPort, mqttUrl } = await manager.start();
  const api = `${manager.tls ? 'https' : 'http'}://${config.host}:${httpPort}`;
  logger.info(
    { http: api, mqtt: mqttUrl, dataDir: config.dataDir, caFingerprint: manager.tls?.caFingerprint },
    `cluster manager listening: API and dashboard on ${api}, MQTT on ${mqttUrl}`,
  );
} catch (error) {
  logger.fatal({ err: (error as Error).message }, 'cluster manager failed to start');
  process.exit(1);
}

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    manager.stop().then(
      () => process.exit(0),
      (error: Error) => {
        logger.error({ err: error.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  });
}
