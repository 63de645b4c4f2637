import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { hasAesInstructions } from '../../net-manager/secure/aes-hardware.js';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { netManagerDir, startOverlayWorker } from '../helpers/overlay.js';
import type { Program } from '../helpers/programs.js';
import { type Endpoint, IPERF_SECONDS, measurePaths, PINGS, placeMeasured } from './net-measure.js';
import { median, percentile, report } from './report.js';

const ROUNDS = Number(process.env.BENCH_OVERLAY_ROUNDS ?? 2);
const VXLAN = 'vxbench0';

/**
 * TCP throughput (iperf3) and ping RTT between two containers on two workers over the overlay, encrypted (the
 * default) and unencrypted (a second cluster, `--overlay-plaintext`, on two more workers), each also with every
 * packet through the TypeScript translator (`--no-fast-path`, two more workers each), next to the same
 * between two workers' namespaces over the plain underlay veth path and over kernel VXLAN between the same
 * namespaces (what K3s' flannel uses), measured in the same run, interleaved.
 */
describe('overlay throughput and latency', () => {
  let network: TestNetwork | undefined;
  const hosts: TestHost[] = [];
  const netManagers: Program[] = [];
  const clusters: E2eCluster[] = [];
  /** The cluster of each worker, by host index - 1. */
  const clusterOf: E2eCluster[] = [];
  const paths = new Map<string, { client: Endpoint; server: Endpoint }>();

  beforeAll(async () => {
    network = TestNetwork.create();
    network.allowHostToHost();
    const join2 = async (cluster: E2eCluster, indices: [number, number], flags: string[] = []) => {
      if (!cluster.httpPort) await cluster.startClusterManager();
      for (const index of indices) {
        const host = network!.addHost(index);
        hosts[index - 1] = host;
        clusterOf[index - 1] = cluster;
        netManagers.push(await startOverlayWorker(cluster, `bench-${index}`, host, flags));
      }
      await cluster.waitForNodes(indices.map((index) => `bench-${index}`));
    };
    const encrypted = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 6000 });
    const plain = new E2eCluster({
      host: network.bridgeAddress,
      nodeTimeoutMs: 6000,
      overlayPlaintext: true,
    });
    clusters.push(encrypted, plain);
    await join2(encrypted, [1, 2]);
    await join2(plain, [3, 4]);
    await join2(encrypted, [5, 6], ['--cipher', 'chacha20-poly1305']);
    await join2(encrypted, [7, 8], ['--no-fast-path']);
    await join2(plain, [9, 10], ['--no-fast-path']);
    paths.set(`overlay, encrypted (${hasAesInstructions() ? 'AES-256-GCM' : 'ChaCha20-Poly1305'})`, {
      server: await placeMeasured(encrypted, 'bench-server', 'bench-1'),
      client: await placeMeasured(encrypted, 'bench-client', 'bench-2'),
    });
    paths.set('overlay, encrypted (ChaCha20-Poly1305: --cipher)', {
      server: await placeMeasured(encrypted, 'bench-chacha-server', 'bench-5'),
      client: await placeMeasured(encrypted, 'bench-chacha-client', 'bench-6'),
    });
    paths.set(
      `overlay, encrypted (${hasAesInstructions() ? 'AES-256-GCM' : 'ChaCha20-Poly1305'}), slow path only`,
      {
        server: await placeMeasured(encrypted, 'bench-slow-server', 'bench-7'),
        client: await placeMeasured(encrypted, 'bench-slow-client', 'bench-8'),
      },
    );
    paths.set('overlay, unencrypted (--overlay-plaintext)', {
      server: await placeMeasured(plain, 'bench-plain-server', 'bench-3'),
      client: await placeMeasured(plain, 'bench-plain-client', 'bench-4'),
    });
    paths.set('overlay, unencrypted, slow path only', {
      server: await placeMeasured(plain, 'bench-plain-slow-server', 'bench-9'),
      client: await placeMeasured(plain, 'bench-plain-slow-client', 'bench-10'),
    });
    const [a, b] = hosts as [TestHost, TestHost];
    paths.set('underlay veth (worker -> worker)', {
      client: { prefix: b.execPrefix, address: b.address },
      server: { prefix: a.execPrefix, address: a.address },
    });
    for (const [host, peer, address] of [
      [a, b, '10.211.0.1'],
      [b, a, '10.211.0.2'],
    ] as const) {
      host.exec('ip', ['link', 'add', VXLAN, 'type', 'vxlan', 'id', '42', 'dstport', '4789']);
      host.exec('ip', ['link', 'set', VXLAN, 'type', 'vxlan', 'remote', peer.address, 'local', host.address]);
      host.exec('ip', ['addr', 'add', `${address}/24`, 'dev', VXLAN]);
      host.exec('ip', ['link', 'set', VXLAN, 'mtu', '1450', 'up']);
    }
    paths.set('kernel VXLAN (worker -> worker)', {
      client: { prefix: b.execPrefix, address: '10.211.0.2' },
      server: { prefix: a.execPrefix, address: '10.211.0.1' },
    });
  }, 120_000);

  afterAll(async () => {
    try {
      for (const cluster of clusters) await cluster.stop();
      await Promise.all(netManagers.map((nm) => nm.stop()));
    } finally {
      network?.destroy();
    }
  });

  it('measures TCP throughput and RTT on each path', async () => {
    const results = await measurePaths(paths, ROUNDS);
    const baseline = results.get('underlay veth (worker -> worker)')!;
    const over = (values: number[], base: number[]) => Number((median(values) - median(base)).toFixed(3));
    const rows = [...results].map(([path, { gbits, rtts, steadyRtts, retransmits }]) => ({
      path,
      tcpGbitPerS: Number(median(gbits).toFixed(2)),
      tcpRuns: gbits.map((value) => value.toFixed(2)).join(' / '),
      retransmits: retransmits.join(' / '),
      rttMedianMs: Number(median(rtts).toFixed(3)),
      rttP99Ms: Number(percentile(rtts, 99).toFixed(3)),
      rttOverMedianUnderlayMs: over(rtts, baseline.rtts),
      rtt1msApartMedianMs: Number(median(steadyRtts).toFixed(3)),
      rtt1msApartOverUnderlayMs: over(steadyRtts, baseline.steadyRtts),
    }));
    const status = await netManagerCounters();
    report('overlay', rows, { iperfSeconds: IPERF_SECONDS, rounds: ROUNDS, pings: PINGS, counters: status });
  }, 900_000);

  /** The net managers' counters (drops by reason, packets each way), read from their local API. */
  function netManagerCounters(): Promise<unknown[]> {
    return Promise.all(
      hosts.map(
        (_, index) =>
          new Promise((resolve) => {
            const cluster = clusterOf[index]!;
            const socketPath = join(netManagerDir(cluster, `bench-${index + 1}`), 'net-manager.sock');
            request({ socketPath, path: '/v1/status' }, (res) => {
              let text = '';
              res.on('data', (chunk) => {
                text += chunk;
              });
              res.on('end', () => resolve((JSON.parse(text) as { counters: unknown }).counters));
            })
              .on('error', () => resolve(null))
              .end();
          }),
      ),
    );
  }
});
