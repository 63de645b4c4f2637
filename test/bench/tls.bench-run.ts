import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { afterAll, expect, it } from 'vitest';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { BINS, Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';
import { median, percentile, report, rssMiB } from './report.js';

/**
 * What TLS costs, against plain text (`--insecure`) in the same run: the same cluster manager and the same
 * fleet of hollow workers (edge-fleet-sim, the real protocol) each way. Measured: the fleet's connect storm
 * (every worker registers over WSS and logs in over MQTTS), the telemetry it sends at a fixed rate as the
 * cluster manager's CPU and as what an operator subscriber receives, and the deploy round trip: POST
 * /api/jobs (HTTPS) until the `running` report reaches the operator (command and report over MQTTS).
 */
const WORKERS = Number(process.env.BENCH_TLS_WORKERS ?? 1000);
const TELEMETRY_MS = Number(process.env.BENCH_TLS_TELEMETRY_MS ?? 1000);
const HOLD_S = Number(process.env.BENCH_TLS_HOLD_S ?? 30);
const DEPLOYS = Number(process.env.BENCH_TLS_DEPLOYS ?? 50);
const MODES = (process.env.BENCH_TLS_MODES ?? 'plain,tls').split(',') as ('plain' | 'tls')[];

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function run(mode: 'plain' | 'tls'): Promise<Record<string, string | number>> {
  const cluster = new E2eCluster({ registrationRate: 1000, nodeTimeoutMs: 6000, insecure: mode === 'plain' });
  cleanups.push(() => cluster.stop());
  await cluster.startClusterManager();
  const pid = cluster.cm!.pid;
  const online = async () => {
    const text = await (await cluster.api('/metrics')).text();
    const line = text
      .split('\n')
      .find((candidate) => candidate.startsWith('edge_cm_nodes{status="online"} '));
    return Number(line?.split(' ')[1] ?? 0);
  };

  const startedAt = performance.now();
  const sim = Program.start(
    'fleet-sim',
    BINS.fleetSim,
    [
      ...['--cluster-manager', cluster.url, '--workers', String(WORKERS), '--connect-rate', '500'],
      ...['--telemetry-interval', String(TELEMETRY_MS), '--report-every', '1'],
    ],
    { FLEET_JOIN_TOKEN: cluster.joinToken },
  );
  cleanups.push(() => sim.stop());
  const connected = () =>
    sim.output
      .split('\n')
      .filter((line) => line.startsWith('{"type":"stats"'))
      .map((line) => JSON.parse(line) as { mqttConnected: number })
      .at(-1)?.mqttConnected;
  await waitFor(
    async () => (await online()) === WORKERS && connected() === WORKERS,
    `${WORKERS} hollow workers online and connected`,
    300_000,
    500,
  );
  const onlineS = (performance.now() - startedAt) / 1000;

  // An operator watching telemetry and status reports, over the same transport as the workers.
  const brokerUrl = `${mode === 'tls' ? 'mqtts' : 'mqtt'}://127.0.0.1:${cluster.mqttPort}`;
  const operator = await mqtt.connectAsync(brokerUrl, {
    protocolVersion: 4,
    username: 'operator',
    password: cluster.telemetryToken,
    ca: cluster.ca || undefined,
    reconnectPeriod: 0,
  });
  cleanups.push(() => operator.endAsync(true));
  let telemetry = 0;
  const running = new Map<string, number>();
  operator.on('message', (topic, payload) => {
    if (topic.endsWith('/information')) telemetry++;
    else if (topic.endsWith('/job')) {
      const report = JSON.parse(payload.toString()) as { job: string; status: string };
      if (report.status === 'running' && !running.has(report.job)) running.set(report.job, performance.now());
    }
  });
  await operator.subscribeAsync(['nodes/+/information', 'nodes/+/job'], { qos: 0 });

  const cpuBefore = cpuSeconds(pid);
  const simCpuBefore = cpuSeconds(sim.pid);
  const telemetryBefore = telemetry;
  await new Promise((resolve) => setTimeout(resolve, HOLD_S * 1000));
  const received = telemetry - telemetryBefore;
  const cmCpu = ((cpuSeconds(pid) - cpuBefore) / HOLD_S) * 100;
  const simCpu = ((cpuSeconds(sim.pid) - simCpuBefore) / HOLD_S) * 100;

  // Deploys one after another on the held fleet.
  const deployMs: number[] = [];
  const postMs: number[] = [];
  for (let index = 0; index < DEPLOYS; index++) {
    const t0 = performance.now();
    const response = await cluster.api('/api/jobs', {
      method: 'POST',
      json: { name: `tls-bench-${index}`, image: 'edge/busybox:latest', command: ['sleep', '3600'] },
    });
    postMs.push(performance.now() - t0);
    if (response.status !== 201)
      throw new Error(`POST /api/jobs: ${response.status} ${await response.text()}`);
    const { id } = (await response.json()) as { id: string };
    const at = await waitFor(() => running.get(id), 'the running report', 30_000, 1);
    deployMs.push(at - t0);
  }

  const row = {
    mode: mode === 'tls' ? 'TLS (default)' : 'plain text (--insecure)',
    workersOnlineS: Math.round(onlineS * 10) / 10,
    telemetryPerS: Math.round(received / HOLD_S),
    cmCpuPercent: Math.round(cmCpu),
    // Each worker sends two messages an interval (information, jobs/resources): CPU per message received.
    cmCpuUsPerMessage: Math.round(((cmCpu / 100) * 1e6) / ((2 * received) / HOLD_S)),
    simCpuPercent: Math.round(simCpu),
    cmRssMiB: rssMiB(pid),
    deployMedianMs: Math.round(median(deployMs) * 10) / 10,
    deployP95Ms: Math.round(percentile(deployMs, 95) * 10) / 10,
    postMedianMs: Math.round(median(postMs) * 10) / 10,
  };
  await sim.stop();
  await operator.endAsync(true);
  await cluster.stop();
  return row;
}

it(`TLS against plain text: ${WORKERS} hollow workers, telemetry every ${TELEMETRY_MS} ms, ${DEPLOYS} deploys`, {
  timeout: 1_200_000,
}, async () => {
  const rows: Record<string, string | number>[] = [];
  for (const mode of MODES) rows.push(await run(mode));
  report('tls-cost', rows, { workers: WORKERS, telemetryMs: TELEMETRY_MS, holdS: HOLD_S, deploys: DEPLOYS });
  expect(rows).toHaveLength(MODES.length);
});
