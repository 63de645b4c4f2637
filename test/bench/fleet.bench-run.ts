import { readFileSync } from 'node:fs';
import { afterAll, it } from 'vitest';
import { E2eCluster, JOIN_TOKEN } from '../helpers/e2e-cluster.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { BINS, Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';
import { report, rssMiB } from './report.js';

/**
 * The cluster manager holding a fleet of hollow workers (edge-fleet-sim, the real protocol) on this machine,
 * the simulator sharing its two cores: time for the fleet to come online, CPU and memory while it is held, then
 * a burst of job posts. Run once with the embedded broker and once with Debian's mosquitto as the broker, the
 * baseline, in the same run.
 */
const WORKERS = Number(process.env.BENCH_FLEET_WORKERS ?? 2000);
const HOLD_S = Number(process.env.BENCH_FLEET_HOLD_S ?? 30);
const JOBS = Number(process.env.BENCH_FLEET_JOBS ?? 100);
const REPLICAS = Number(process.env.BENCH_FLEET_REPLICAS ?? 10);
const BROKERS = (process.env.BENCH_FLEET_BROKERS ?? 'embedded,mosquitto').split(',');
/** BENCH_FLEET_OUTAGES=0 leaves out the kill -9 and broker restart (for a CPU profile of a clean stop). */
const OUTAGES = process.env.BENCH_FLEET_OUTAGES !== '0';

interface SimStats {
  type: string;
  ts: number;
  registered: number;
  mqttConnected: number;
  cpuPercent: number;
  rssMiB: number;
  commandLatencyMs?: { p50: number; p99: number; max: number; count: number };
  runningLatencyMs?: { p50: number; p99: number; max: number; count: number };
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function lastStats(sim: Program): SimStats | undefined {
  const lines = sim.output.split('\n').filter((line) => line.startsWith('{"type":"stats"'));
  return lines.length ? (JSON.parse(lines.at(-1)!) as SimStats) : undefined;
}

const rows: Record<string, string | number>[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function run(broker: string): Promise<void> {
  const mosquitto = broker === 'mosquitto' ? await Mosquitto.start() : undefined;
  if (mosquitto) cleanups.push(() => mosquitto.stop());
  const cluster = new E2eCluster({ nodeTimeoutMs: 6000, mqttUrl: mosquitto?.url });
  cleanups.push(() => cluster.stop());
  await cluster.startClusterManager();
  const pid = cluster.cm!.pid;
  const events = async (type: string) =>
    ((await (await cluster.api(`/api/events?limit=1000&type=${type}`)).json()) as unknown[]).length;
  // Probes from the metrics (counts kept in memory): a full GET /api/nodes of 10,000 nodes every second would
  // be load of its own (lists page; see docs/api.md).
  const gauge = async (series: string) => {
    const text = await (await cluster.api('/metrics')).text();
    const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
    return Number(line?.slice(series.length + 1) ?? 0);
  };
  const online = () => gauge('edge_cm_nodes{status="online"}');

  const startedAt = performance.now();
  const sim = Program.start('fleet-sim', BINS.fleetSim, [
    ...['--cluster-manager', cluster.url, '--join-token', JOIN_TOKEN, '--workers', String(WORKERS)],
    ...['--connect-rate', '500', '--report-every', '1'],
  ]);
  cleanups.push(() => sim.stop());
  await waitFor(async () => (await online()) === WORKERS, `${WORKERS} online`, 300_000, 1000);
  const onlineS = (performance.now() - startedAt) / 1000;

  // Held: CPU over the hold, in % of one core.
  const cpuBefore = cpuSeconds(pid);
  await new Promise((resolve) => setTimeout(resolve, HOLD_S * 1000));
  const heldCpu = ((cpuSeconds(pid) - cpuBefore) / HOLD_S) * 100;
  const heldRss = rssMiB(pid);
  const simHeld = lastStats(sim);

  // The burst: every job posted as fast as HTTP takes them (20 in flight), timed to all running.
  const postStart = performance.now();
  const postMs: number[] = [];
  for (let start = 0; start < JOBS; start += 20) {
    await Promise.all(
      Array.from({ length: Math.min(20, JOBS - start) }, async (_, i) => {
        const t0 = performance.now();
        const response = await cluster.api('/api/jobs', {
          method: 'POST',
          json: {
            name: `fleet-${start + i}`,
            image: 'edge/busybox:latest',
            command: ['sleep', '3600'],
            replicas: REPLICAS,
            resources: { cpus: 0.1, memoryMB: 16 },
          },
        });
        if (response.status !== 201)
          throw new Error(`POST /api/jobs: ${response.status} ${await response.text()}`);
        postMs.push(performance.now() - t0);
      }),
    );
  }
  const lastPost = performance.now();
  await waitFor(
    async () => (await gauge('edge_cm_instances{status="running"}')) === JOBS * REPLICAS,
    'every instance running',
    300_000,
    500,
  );
  const runningS = (performance.now() - lastPost) / 1000;
  // Let the simulator's next stats line carry the burst's latencies.
  await new Promise((resolve) => setTimeout(resolve, 5500));
  const simAfter = lastStats(sim);
  const rssAfter = rssMiB(pid);
  const offlineEvents = await events('node.offline');
  const pausedEvents = await events('failover.paused');

  /**
   * An outage on the control side with the fleet connected: seconds until the simulator has every worker's MQTT
   * session up again (its own count, from its stats lines), and, 30 s after the cause, how many nodes the cluster
   * manager has online, how many went offline and how many instances it moved meanwhile.
   */
  const outage = async (cause: () => Promise<void>) => {
    const offlineBefore = await events('node.offline');
    const replacedBefore = await events('instance.replaced');
    const causedAt = Date.now();
    await cause();
    let reconnectedS = Number.NaN;
    await waitFor(
      () => {
        const stats = lastStats(sim);
        if (!stats || stats.ts <= causedAt || stats.mqttConnected < WORKERS) return false;
        reconnectedS = (stats.ts - causedAt) / 1000;
        return true;
      },
      'every worker connected again',
      60_000,
      250,
    ).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, causedAt + 30_000 - Date.now())));
    return {
      reconnectedS: Math.round(reconnectedS * 10) / 10,
      onlineAfter30s: await online(),
      offline: (await events('node.offline')) - offlineBefore,
      replaced: (await events('instance.replaced')) - replacedBefore,
    };
  };

  const skipped = { reconnectedS: '-', onlineAfter30s: '-', offline: '-', replaced: '-' };
  // kill -9 of the cluster manager (with the embedded broker, the broker goes too), started again at once.
  const killed = !OUTAGES
    ? skipped
    : await outage(async () => {
        await cluster.cm!.crash();
        await cluster.startClusterManager();
      });
  // The external broker restarted (mosquitto keeps no sessions here: every client connects afresh).
  const brokerRestarted =
    mosquitto && OUTAGES
      ? await outage(async () => {
          await mosquitto.halt();
          await mosquitto.startAgain();
        })
      : undefined;
  rows.push({
    broker,
    workers: WORKERS,
    allOnlineS: Math.round(onlineS * 10) / 10,
    heldCpuPercent: Math.round(heldCpu),
    heldRssMiB: heldRss,
    simCpuPercent: Math.round(simHeld?.cpuPercent ?? Number.NaN),
    burst: `${JOBS}x${REPLICAS}`,
    postsS: Math.round((lastPost - postStart) / 100) / 10,
    postP50Ms: Math.round(postMs.sort((a, b) => a - b)[Math.floor(postMs.length / 2)]!),
    allRunningAfterLastPostS: Math.round(runningS * 10) / 10,
    commandP99Ms: simAfter?.commandLatencyMs?.p99 ?? Number.NaN,
    runningP99Ms: simAfter?.runningLatencyMs?.p99 ?? Number.NaN,
    rssAfterMiB: rssAfter,
    offlineEvents,
    failoverPaused: pausedEvents,
    killedReconnectedS: killed.reconnectedS,
    killedOnlineAfter30s: killed.onlineAfter30s,
    killedOfflineEvents: killed.offline,
    killedReplaced: killed.replaced,
    brokerRestartReconnectedS: brokerRestarted?.reconnectedS ?? '-',
    brokerRestartOnlineAfter30s: brokerRestarted?.onlineAfter30s ?? '-',
    brokerRestartOfflineEvents: brokerRestarted?.offline ?? '-',
    brokerRestartReplaced: brokerRestarted?.replaced ?? '-',
    cmAlive: cluster.cm!.running ? 'yes' : 'no',
  });
  await sim.stop();
  await cluster.stop();
  await mosquitto?.stop();
}

it(`fleet: ${WORKERS} hollow workers, ${JOBS} jobs x ${REPLICAS}`, {
  timeout: (HOLD_S + 900) * 1000,
}, async () => {
  for (const broker of BROKERS) await run(broker);
  report('fleet', rows, { workers: WORKERS, holdS: HOLD_S, jobs: JOBS, replicas: REPLICAS });
});
