import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROTOCOL_UDP } from '../../net-manager/routing/packet.js';
import { pingIn } from '../helpers/docker.js';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { netManagerDir, netManagerStatus, overlayJob, startOverlayWorker } from '../helpers/overlay.js';
import { buildPacket } from '../helpers/packets.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const WORKERS = ['pt-1', 'pt-2'];

/**
 * A cluster whose operator turned overlay encryption off (`--overlay-plaintext`, for networks trusted end to end):
 * the net managers say so, send packets as they are (50 bytes of room below the underlay's MTU, as before), and
 * still take tunnel packets only from the endpoints of workers the cluster manager named.
 */
describe('an overlay with encryption turned off', () => {
  let network: TestNetwork | undefined;
  const hosts = new Map<string, TestHost>();
  const netManagers = new Map<string, Program>();
  let cluster: E2eCluster | undefined;

  beforeAll(async () => {
    network = TestNetwork.create();
    network.allowHostToHost();
    cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 15_000, overlayPlaintext: true });
    await cluster.startClusterManager();
    for (const [index, name] of WORKERS.entries()) {
      const host = network.addHost(index + 1);
      hosts.set(name, host);
      netManagers.set(name, await startOverlayWorker(cluster, name, host));
    }
    await cluster.waitForNodes(WORKERS);
  }, 90_000);

  afterAll(async () => {
    try {
      await cluster?.stop();
      await Promise.all([...netManagers.values()].map((nm) => nm.stop()));
    } finally {
      network?.destroy();
    }
  });

  const netStatus = (name: string) => netManagerStatus(hosts.get(name)!, netManagerDir(cluster!, name));
  const createOn = (name: string, worker: string) => overlayJob(cluster!, name, worker);

  it('reaches across workers unencrypted, says so, and drops what strangers send', async () => {
    const near = await createOn('pt-near', 'pt-1');
    const far = await createOn('pt-far', 'pt-2');
    await waitFor(() => pingIn(near.container, far.instanceIp), 'ping across the plain overlay', 20_000);
    const status = netStatus('pt-1');
    expect(status.encryption).toBe(false);
    expect(status.mtu).toBe(1450);
    expect(status.peers).toBeUndefined();
    expect(status.counters.udpSealed).toBeUndefined();
    expect(netManagers.get('pt-1')!.output).toMatch(/overlay encryption is off for this cluster/);
    const before = status.counters;
    const stranger = createSocket('udp4');
    const packet = buildPacket({
      protocol: PROTOCOL_UDP,
      src: far.instanceIp,
      dst: near.instanceIp,
      dstPort: 9,
      payload: Buffer.from('x'),
    });
    await new Promise<void>((resolve, reject) =>
      stranger.send(packet, 50103, hosts.get('pt-1')!.address, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    stranger.close();
    await waitFor(
      () => netStatus('pt-1').counters.strangersDropped! >= before.strangersDropped! + 1,
      'the stranger packet dropped',
    );
    expect(netStatus('pt-1').counters.delivered).toBe(before.delivered);
  }, 120_000);
});
