import { readFileSync } from 'node:fs';
import { afterAll, it } from 'vitest';
import { E2eCluster } from '../helpers/e2e-cluster.js';
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

function statsLines(sim: Program): SimStats[] {
  return sim.output
    .split('\n')
    .filter((line) => line.startsWith('{"type":"stats"'))
    .map((line) => JSON.parse(line) as SimStats);
}

function lastStats(sim: Program): SimStats | undefined {
  return statsLines(sim).at(-1);
}

const rows: Record<string, string | number>[] = [];
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

async function run(broker: string): Promise<void> {
  const mosquitto = broker === 'mosquitto' ? await Mosquitto.start() : undefined;
  if (mosquitto) cleanups.push(() => mosquitto.stop());
  const cluster = new E2eCluster({ registrationRate: 1000, nodeTimeoutMs: 6000, mqttUrl: mosquitto?.url });
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

  /** Why nodes went offline (the newest 1,000 events), grouped by reason: the message without the node's name. */
  const offlineReasons = async (phase: string) => {
    const list = (await (await cluster.api('/api/events?limit=1000&type=node.offline')).json()) as {
      message: string;
    }[];
    const reasons = new Map<string, number>();
    for (const { message } of list) {
      const reason = message.replace(/^node \S+ offline: /, '').replace(/\d+ ms/, 'N ms');
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    console.log(
      `${broker} ${phase}: offline events by reason: ${JSON.stringify(Object.fromEntries(reasons))}`,
    );
  };

  const startedAt = performance.now();
  const sim = Program.start(
    'fleet-sim',
    BINS.fleetSim,
    [
      ...['--cluster-manager', cluster.url, '--workers', String(WORKERS)],
      ...['--connect-rate', '500', '--report-every', '1'],
    ],
    { FLEET_JOIN_TOKEN: cluster.joinToken },
  );
  cleanups.push(() => sim.stop());
  // Online in the cluster manager (registered, or heard) and connected to MQTT in the simulator's own count:
  // a node is online from its registration, before its MQTT session is up.
  await waitFor(
    async () => (await online()) === WORKERS && lastStats(sim)?.mqttConnected === WORKERS,
    `${WORKERS} online and connected`,
    300_000,
    1000,
  );
  const onlineS = (performance.now() - startedAt) / 1000;

  // Held: CPU over the hold, in % of one core.
  const cpuBefore = cpuSeconds(pid);
  await new Promise((resolve) => setTimeout(resolve, HOLD_S * 1000));
  const heldCpu = ((cpuSeconds(pid) - cpuBefore) / HOLD_S) * 100;
  const heldRss = rssMiB(pid);
  const simHeld = lastStats(sim);

  // One job of 10 replicas on the quiet fleet (the "1 job x 10" row): the command round trip then.
  const probe = await cluster.api('/api/jobs', {
    method: 'POST',
    json: {
      name: 'fleet-probe',
      image: 'edge/busybox:latest',
      command: ['sleep', '3600'],
      replicas: REPLICAS,
    },
  });
  if (probe.status !== 201) throw new Error(`POST /api/jobs: ${probe.status} ${await probe.text()}`);
  const probedAt = Date.now();
  await waitFor(
    () => {
      const stats = lastStats(sim);
      return stats && stats.ts > probedAt + 1000 && (stats.commandLatencyMs?.count ?? 0) >= REPLICAS;
    },
    'the probe job commands',
    30_000,
    250,
  );
  const quietCommandP99Ms = lastStats(sim)?.commandLatencyMs?.p99 ?? Number.NaN;

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
    async () => (await gauge('edge_cm_instances{status="running"}')) === (JOBS + 1) * REPLICAS,
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
  if (offlineEvents > 0) await offlineReasons('burst');
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
    // How the fleet came back, second by second, for the record.
    const series = statsLines(sim)
      .filter((stats) => stats.ts > causedAt)
      .slice(0, 60)
      .map((stats) => `${Math.round((stats.ts - causedAt) / 1000)}s:${stats.mqttConnected}`);
    console.log(`${broker} outage: MQTT sessions up, by seconds after the cause: ${series.join(' ')}`);
    const warnings = (cluster.cm?.output ?? '')
      .split('\n')
      .filter((line) => /"level":(40|50|60)/.test(line))
      .map((line) => line.slice(0, 300));
    const counts = new Map<string, number>();
    for (const line of warnings) {
      const msg = /"msg":"([^"]*)"/.exec(line)?.[1] ?? line;
      counts.set(msg, (counts.get(msg) ?? 0) + 1);
    }
    console.log(
      `${broker} outage: cluster manager warnings since its start: ${JSON.stringify(Object.fromEntries(counts))}`,
    );
    const offline = (await events('node.offline')) - offlineBefore;
    if (offline > 0) await offlineReasons('outage');
    return {
      reconnectedS: Math.round(reconnectedS * 10) / 10,
      onlineAfter30s: await online(),
      offline,
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
    quietCommandP99Ms,
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
