#!/usr/bin/env -S node --max-semi-space-size=1
import { createLogger, readProgramOptions } from '../shared/index.js';
import { buildConfig, ConfigError, optionSpecs } from './config.js';
import { NodeEngine } from './node-engine.js';
import { loadSensorsFile, SensorsFileError } from './telemetry/sensors.js';

const PROGRAM = 'edge-node-engine';

function usageError(message: string): never {
  process.stderr.write(`${PROGRAM}: ${message}\n`);
  process.exit(2);
}

const options = readProgramOptions(
  PROGRAM,
  'Runs the workloads the cluster manager places on this machine and reports on them.',
  optionSpecs,
);

let config: ReturnType<typeof buildConfig>;
let sensors: Awaited<ReturnType<typeof loadSensorsFile>> = [];
try {
  config = buildConfig(options);
  if (config.sensorsFile) sensors = await loadSensorsFile(config.sensorsFile);
} catch (error) {
  if (error instanceof ConfigError || error instanceof SensorsFileError) usageError(error.message);
  throw error;
}

const logger = createLogger(PROGRAM);
const engine = new NodeEngine(config, sensors, logger);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down; workloads keep running');
  const force = setTimeout(() => process.exit(1), 15_000);
  force.unref();
  try {
    await engine.stop();
  } catch (error) {
    logger.error({ err: (error as Error).message }, 'unclean shutdown');
  }
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

try {
  const apiUrl = await engine.start();
  logger.info(
    { api: apiUrl, clusterManager: config.clusterManagerUrl, dataDir: config.dataDir },
    `local info API listening on ${apiUrl}`,
  );
} catch (error) {
  logger.fatal({ err: (error as Error).message }, 'cannot start');
  process.exit(1);
}
