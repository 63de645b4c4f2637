import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execIn, pingIn } from '../helpers/docker.js';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { NattedHost } from '../helpers/nat.js';
import { TestNetwork } from '../helpers/netns.js';
import { netManagerDir, netManagerStatus, overlayJob, startOverlayWorker } from '../helpers/overlay.js';
import type { Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const WORKERS = ['nat-1', 'nat-2', 'nat-3', 'nat-4'];
/** Behind NATs that give every destination another random port: no hole can be punched between them. */
const SYMMETRIC = new Set(['nat-3', 'nat-4']);

/**
 * Two workers, each behind its own NAT (a router namespace with iptables MASQUERADE), the cluster manager on the
 * "public" test bridge, nobody setting --public-ip: each net manager announces its private address, learns from
 * the cluster manager's rendezvous port what its NAT maps it to, and announces that too. A handshake goes to every
 * candidate while the cluster manager has the other side reach out as well, which opens both NATs: the path is
 * direct, router to router. Two more workers sit behind NATs that pick a random port per destination: no hole
 * opens between them, and their traffic goes through the cluster manager's relay.
 */
describe('the overlay through two NATs', () => {
  let network: TestNetwork | undefined;
  const hosts = new Map<string, NattedHost>();
  const netManagers = new Map<string, Program>();
  let cluster: E2eCluster | undefined;

  beforeAll(async () => {
    network = TestNetwork.create();
    network.allowHostToHost();
    cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 15_000 });
    await cluster.startClusterManager();
    for (const [index, name] of WORKERS.entries()) {
      // Worker 1 reaches its router over a 1420-byte link (PPPoE, a VPN): its overlay MTU must follow.
      const host = NattedHost.create(network, index + 1, {
        symmetric: SYMMETRIC.has(name),
        ...(name === 'nat-1' ? { lanMtu: 1420 } : {}),
      });
      hosts.set(name, host);
      netManagers.set(name, await startOverlayWorker(cluster, name, host));
    }
    await cluster.waitForNodes(WORKERS);
  }, 90_000);

  afterAll(async () => {
    try {
      if (process.env.E2E_DEBUG)
        for (const name of WORKERS) {
          const host = hosts.get(name)!;
          console.log(name, JSON.stringify(netStatus(name).peers), netStatus(name).candidates);
          console.log(
            name,
            host.exec('curl', [
              '-s',
              '--unix-socket',
              join(cluster!.dir, `nm-${name}`, 'net-manager.sock'),
              'http://x/v1/routes',
            ]),
          );
          console.log('router', host.router.exec('conntrack', ['-L', '-p', 'udp']));
        }
      await cluster?.stop();
      await Promise.all([...netManagers.values()].map((nm) => nm.stop()));
    } finally {
      network?.destroy();
    }
  });

  const netStatus = (name: string) => netManagerStatus(hosts.get(name)!, netManagerDir(cluster!, name));
  const createOn = (name: string, worker: string) => overlayJob(cluster!, name, worker);

  it('announces the NAT mapping the rendezvous port saw, beside the private address', async () => {
    for (const [name, host] of hosts) {
      await waitFor(
        () => netStatus(name).candidates?.some((candidate) => candidate.ip === host.router.address),
        `${name}'s NAT mapping among its candidates`,
      );
      const status = netStatus(name);
      expect(status.publicIp).toBe(host.address);
      // A port-preserving NAT keeps the overlay port; a symmetric one picks another.
      expect(status.candidates).toContainEqual({
        ip: host.router.address,
        port: SYMMETRIC.has(name) ? expect.any(Number) : 50103,
      });
    }
  });

  it('reaches across both NATs on a direct path, both ways, and recovers when the NATs forget their mappings', async () => {
    const one = await createOn('nat-one', 'nat-1');
    const two = await createOn('nat-two', 'nat-2');
    await waitFor(
      () => pingIn(one.container, two.instanceIp),
      'ping from behind NAT 1 to behind NAT 2',
      30_000,
    );
    await waitFor(
      () => pingIn(two.container, one.instanceIp),
      'ping from behind NAT 2 to behind NAT 1',
      30_000,
    );
    // Direct: each side's peer is the other's router (its NAT mapping), not a relay and not a private address.
    for (const [name, other] of [
      ['nat-1', 'nat-2'],
      ['nat-2', 'nat-1'],
    ] as const) {
      const peer = netStatus(name).peers?.find((candidate) => candidate.session === 'established');
      expect(peer?.endpoint).toBe(`${hosts.get(other)!.router.address}:50103`);
    }

    // The overlay MTU of worker 1 leaves room for the seal on its 1420-byte link (1420 - 80): a full-size packet
    // crosses without a fragment anywhere.
    expect(netStatus('nat-1').mtu).toBe(1340);
    expect(netStatus('nat-2').mtu).toBe(1420);
    const fragmentsBefore = [...hosts.values()].map((host) => host.fragmentsMade());
    expect(
      execIn(one.container, ['ping', '-c', '3', '-s', String(1340 - 28), '-W', '2', two.instanceIp]),
    ).toMatch(/3 packets received/);
    expect([...hosts.values()].map((host) => host.fragmentsMade())).toEqual(fragmentsBefore);

    for (const host of hosts.values()) host.flushMappings();
    const flushedAt = Date.now();
    await waitFor(
      () => pingIn(one.container, two.instanceIp) && pingIn(two.container, one.instanceIp),
      'both ways again after the NATs forgot their mappings',
      60_000,
      500,
    );
    console.log(`traffic recovered ${Date.now() - flushedAt} ms after the NAT mappings were flushed`);
  }, 150_000);

  it('goes through the relay between two NATs that cannot be punched through, both ways', async () => {
    const three = await createOn('nat-three', 'nat-3');
    const four = await createOn('nat-four', 'nat-4');
    await waitFor(
      () => pingIn(three.container, four.instanceIp),
      'ping from behind NAT 3 to behind NAT 4',
      45_000,
    );
    await waitFor(
      () => pingIn(four.container, three.instanceIp),
      'ping from behind NAT 4 to behind NAT 3',
      30_000,
    );
    for (const [name, other] of [
      ['nat-3', 'nat-4'],
      ['nat-4', 'nat-3'],
    ] as const) {
      const peer = netStatus(name).peers?.find(
        (candidate) => candidate.nodeId === cluster!.nodeIds.get(other),
      );
      expect(peer).toMatchObject({ session: 'established', via: 'relay' });
      expect(netStatus(name).counters.udpRelayedOut).toBeGreaterThan(0);
    }
    // Tunnel traffic between them crossed the relay: a 1400-byte ping fits (the relay's 12 bytes included).
    expect(execIn(three.container, ['ping', '-c', '3', '-s', '1372', '-W', '2', four.instanceIp])).toMatch(
      /3 packets received/,
    );
  }, 120_000);
});
