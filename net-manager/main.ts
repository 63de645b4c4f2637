#!/usr/bin/env node
import { createLogger, readProgramOptions } from '../shared/index.js';
import { buildConfig, ConfigError, optionSpecs } from './config.js';
import { NetManager } from './net-manager.js';

const PROGRAM = 'edge-net-manager';

const options = readProgramOptions(
  PROGRAM,
  "Joins this worker's containers to the cluster's overlay network (TUN device, UDP tunnels to peers).",
  optionSpecs,
);

let config: ReturnType<typeof buildConfig>;
try {
  config = buildConfig(options);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`${PROGRAM}: ${error.message} (see --help)\n`);
  process.exit(2);
}

const logger = createLogger(PROGRAM);
if (process.getuid?.() !== 0) {
  logger.fatal('the net manager must run as root (it creates a TUN device, links and routes)');
  process.exit(1);
}
// A failed poll stops the data plane: end (non-zero) so that the supervisor starts a fresh one.
const manager = new NetManager(config, logger, () => {
  process.exitCode = 1;
  void shutdown('data plane failure');
});

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: removing the overlay links');
  const force = setTimeout(() => process.exit(1), 10_000);
  force.unref();
  try {
    await manager.stop();
  } catch (error) {
    logger.error({ err: (error as Error).message }, 'unclean shutdown');
    process.exitCode = 1;
  }
  // No process.exit here: with the TUN and UDP handles closed nothing is left, and the process ends by itself.
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

try {
  await manager.start();
  logger.info(
    { socket: config.socketPath, udpPort: config.udpPort, tun: config.tunName, dataDir: config.dataDir },
    `net manager listening: local API on ${config.socketPath}, overlay UDP on port ${config.udpPort}, TUN ${config.tunName}`,
  );
} catch (error) {
  logger.fatal({ err: (error as Error).message }, 'net manager failed to start');
  await manager.stop().catch(() => undefined);
  process.exit(1);
}
