#!/usr/bin/env node
import { pino } from 'pino';
import { TrustError, trustClusterManager } from '../shared/cluster-trust.js';
import { readProgramOptions } from '../shared/options.js';
import { buildConfig, ConfigError, type FleetConfig, optionSpecs } from './config.js';
import { Fleet } from './fleet.js';
import { ProcessGauge, round } from './fleet-stats.js';
import { IdentityBook, IdentityFileError } from './identity-book.js';

const PROGRAM = 'edge-fleet-sim';
/** How long the workers get to say `offline` and close on exit. */
const STOP_GRACE_MS = 5000;

const options = readProgramOptions(
  PROGRAM,
  'Simulates many hollow workers in one process: each registers, speaks MQTT and acks commands like a node ' +
    'engine, and runs nothing. Prints one JSON line of stats every --report-every seconds.',
  optionSpecs,
);

let config: FleetConfig;
let identities: IdentityBook;
let clusterCa: string | undefined;
try {
  config = buildConfig(options);
  identities = await IdentityBook.load(config.identitiesFile);
  // Trusted once for the whole fleet, as each node engine does at its first join (nothing is stored).
  clusterCa = await trustClusterManager({
    url: config.clusterManagerUrl,
    joinToken: config.joinToken,
    caFile: config.caFile,
    // stdout carries the stats lines: what trusting says goes to stderr.
    logger: pino({ name: 'fleet-sim', level: 'warn' }, pino.destination(2)),
  });
} catch (error) {
  if (!(error instanceof ConfigError || error instanceof IdentityFileError || error instanceof TrustError))
    throw error;
  process.stderr.write(`${PROGRAM}: ${error.message} (see --help)\n`);
  process.exit(2);
}

const gauge = new ProcessGauge();
const fleet = new Fleet({ ...config, clusterCa }, identities);
/** When every worker was registered, then connected, for the first time; the steady state starts there. */
const milestones: { allRegisteredAt?: number; allConnectedAt?: number } = {};
let steadyCpu: NodeJS.CpuUsage | undefined;
let lastReport = { at: gauge.startedAt, registrations: 0 };

function print(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function watchMilestones(): void {
  const now = Date.now();
  if (milestones.allRegisteredAt === undefined && fleet.counters.registrations >= config.workers) {
    milestones.allRegisteredAt = now;
  }
  if (milestones.allConnectedAt === undefined && fleet.connectedCount() === config.workers) {
    milestones.allConnectedAt = now;
    steadyCpu = process.cpuUsage();
    clearInterval(milestoneTimer);
  }
}

function report(): void {
  const now = Date.now();
  const snapshot = fleet.snapshot();
  const seconds = Math.max(0.001, (now - lastReport.at) / 1000);
  const registrationsPerS = round((snapshot.registrations - lastReport.registrations) / seconds);
  lastReport = { at: now, registrations: snapshot.registrations };
  print({
    type: 'stats',
    ts: now,
    elapsedS: round((now - gauge.startedAt) / 1000),
    ...snapshot,
    registrationsPerS,
    ...gauge.sample(now),
  });
}

function summary(now: number): Record<string, unknown> {
  const snapshot = fleet.snapshot();
  const thousands = config.workers / 1000;
  const steadyS = milestones.allConnectedAt === undefined ? 0 : (now - milestones.allConnectedAt) / 1000;
  const steadyUsage = steadyCpu ? process.cpuUsage(steadyCpu) : undefined;
  const steadyCpuPercent =
    steadyUsage && steadyS > 0
      ? round(((steadyUsage.user + steadyUsage.system) / (steadyS * 1e6)) * 100)
      : null;
  const rampS =
    milestones.allRegisteredAt === undefined ? null : (milestones.allRegisteredAt - gauge.startedAt) / 1000;
  const rssMiB = gauge.sample(now).rssMiB;
  return {
    type: 'summary',
    ts: now,
    durationS: round((now - gauge.startedAt) / 1000),
    ...snapshot,
    allRegisteredS: rampS === null ? null : round(rampS),
    registrationsPerS: rampS ? round(config.workers / rampS) : null,
    allConnectedS:
      milestones.allConnectedAt === undefined
        ? null
        : round((milestones.allConnectedAt - gauge.startedAt) / 1000),
    cpuPercentAverage: gauge.averageCpuPercent(now),
    cpuPercentSteady: steadyCpuPercent,
    rssMiB,
    rssPeakMiB: gauge.peakRssMiB(),
    rssBaselineMiB: round(gauge.baselineRssMiB),
    perThousandWorkers: {
      cpuPercentSteady: steadyCpuPercent === null ? null : round(steadyCpuPercent / thousands),
      rssMiB: round((rssMiB - gauge.baselineRssMiB) / thousands),
    },
  };
}

const milestoneTimer = setInterval(watchMilestones, 250);
const reportTimer = config.reportEveryMs > 0 ? setInterval(report, config.reportEveryMs) : undefined;

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(milestoneTimer);
  clearInterval(reportTimer);
  const line = summary(Date.now());
  gauge.stop();
  await Promise.race([fleet.stop(), new Promise((resolve) => setTimeout(resolve, STOP_GRACE_MS))]);
  print(line);
  process.exit(0);
}

process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());
if (config.durationMs > 0) setTimeout(() => void shutdown(), config.durationMs);
fleet.start();
