import { afterAll, beforeAll, describe, it } from 'vitest';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { NattedHost } from '../helpers/nat.js';
import { TestNetwork } from '../helpers/netns.js';
import { netManagerDir, netManagerStatus, startOverlayWorker } from '../helpers/overlay.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';
import { type Endpoint, IPERF_SECONDS, measurePaths, PINGS, ping, placeMeasured } from './net-measure.js';
import { median, percentile, report } from './report.js';

const ROUNDS = Number(process.env.BENCH_OVERLAY_ROUNDS ?? 2);

/**
 * The encrypted overlay through NATs, in one cluster, interleaved: two workers on the "public" bridge (no NAT, the
 * baseline), two behind their own port-preserving MASQUERADE routers (a hole punched: direct, router to router) and
 * two behind NATs that pick a random port per destination (no hole: through the cluster manager's relay). TCP
 * throughput and RTT between one container on each worker of a pair, as in the overlay bench.
 */
describe('the overlay through NATs: direct, punched, relayed', () => {
  let network: TestNetwork | undefined;
  const netManagers: Program[] = [];
  const statusOf = new Map<string, () => unknown>();
  let cluster: E2eCluster | undefined;
  const paths = new Map<string, { client: Endpoint; server: Endpoint; worker: string }>();

  beforeAll(async () => {
    network = TestNetwork.create();
    network.allowHostToHost();
    cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 15_000 });
    await cluster.startClusterManager();
    const workers: [string, { execPrefix: string[]; namespace: string; exec: NattedHost['exec'] }][] = [];
    for (const index of [1, 2]) workers.push([`pub-${index}`, network.addHost(index)]);
    for (const index of [3, 4]) workers.push([`nat-${index}`, NattedHost.create(network, index)]);
    for (const index of [5, 6])
      workers.push([`sym-${index}`, NattedHost.create(network, index, { symmetric: true })]);
    for (const [name, host] of workers) {
      netManagers.push(await startOverlayWorker(cluster, name, host));
      statusOf.set(name, () => netManagerStatus(host, netManagerDir(cluster!, name)));
    }
    await cluster.waitForNodes(workers.map(([name]) => name));
    const pair = async (label: string, server: string, client: string) =>
      paths.set(label, {
        server: await placeMeasured(cluster!, `${server}-server`, server),
        client: await placeMeasured(cluster!, `${client}-client`, client),
        worker: client,
      });
    await pair('no NAT (both on the bridge)', 'pub-1', 'pub-2');
    await pair('two NATs, hole punched (direct)', 'nat-3', 'nat-4');
    await pair('two symmetric NATs (relayed by the cluster manager)', 'sym-5', 'sym-6');
    // Every path up (the first packets make the sessions) before anything is measured.
    for (const { client, server } of paths.values())
      await waitFor(
        () => ping(client, server.address, '0.2', 3).length > 0,
        `${server.address} answering`,
        60_000,
      );
  }, 240_000);

  afterAll(async () => {
    try {
      await cluster?.stop();
      await Promise.all(netManagers.map((nm) => nm.stop()));
    } finally {
      network?.destroy();
    }
  });

  it('measures TCP throughput and RTT on each path', async () => {
    const results = await measurePaths(paths, ROUNDS);
    const baseline = results.get('no NAT (both on the bridge)')!;
    const rows = [...results].map(([path, { gbits, rtts, steadyRtts, retransmits }]) => {
      const status = statusOf.get(paths.get(path)!.worker)!() as {
        peers?: { via?: string; endpoint: string }[];
      };
      return {
        path,
        via: [...new Set(status.peers?.map((peer) => `${peer.via} ${peer.endpoint}`))].join(', '),
        tcpGbitPerS: Number(median(gbits).toFixed(2)),
        ofNoNat: `${Math.round((100 * median(gbits)) / median(baseline.gbits))}%`,
        tcpRuns: gbits.map((value) => value.toFixed(2)).join(' / '),
        retransmits: retransmits.join(' / '),
        rttMedianMs: Number(median(rtts).toFixed(3)),
        rttP99Ms: Number(percentile(rtts, 99).toFixed(3)),
        rtt1msApartMedianMs: Number(median(steadyRtts).toFixed(3)),
      };
    });
    report('overlay-nat', rows, { iperfSeconds: IPERF_SECONDS, rounds: ROUNDS, pings: PINGS });
  }, 900_000);
});
