import { execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROTOCOL_UDP } from '../../net-manager/routing/packet.js';
import { hasAesInstructions } from '../../net-manager/secure/aes-hardware.js';
import { ipToNumber, parseCidr } from '../../shared/index.js';
import {
  containersWithLabel,
  execIn,
  fetchIn,
  inspectContainer,
  pingIn,
  startPingIn,
} from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { netManagerDir, netManagerStatus, startOverlayWorker } from '../helpers/overlay.js';
import { buildPacket } from '../helpers/packets.js';
import { BINS, Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const WORKERS = ['ov-1', 'ov-2', 'ov-3'];
const HTTPD = ['httpd', '-f', '-p', '80', '-h', '/www'];

interface OverlayJob extends JobBody {
  serviceIp?: string;
  instances: (JobBody['instances'][number] & { instanceIp?: string; namespaceIp?: string })[];
}

/**
 * Three workers, each a network namespace with its own net manager and node engine, joined to one cluster
 * manager; every container runs in the one dockerd and gets a second interface into its worker's overlay.
 * Traffic between workers crosses the test bridge as UDP between the net managers.
 */
describe('the overlay joins containers across workers', () => {
  let network: TestNetwork | undefined;
  const hosts = new Map<string, TestHost>();
  const netManagers = new Map<string, Program>();
  let cluster: E2eCluster | undefined;

  beforeAll(async () => {
    network = TestNetwork.create();
    network.allowHostToHost();
    // Nothing here waits for a node to be declared offline; a short timeout only makes a loaded machine flap.
    cluster = new E2eCluster({ host: network.bridgeAddress, nodeTimeoutMs: 15_000 });
    await cluster.startClusterManager();
    for (const [index, name] of WORKERS.entries()) {
      const host = network.addHost(index + 1);
      hosts.set(name, host);
      // The last worker moves every packet on its own and never offers AES-GCM: workers with and without
      // offloads, and with either cipher, must talk.
      const flags = index === WORKERS.length - 1 ? ['--no-offload', '--cipher', 'chacha20-poly1305'] : [];
      netManagers.set(
        name,
        await startOverlayWorker(cluster, name, host, ['--rekey-seconds', '3', ...flags]),
      );
    }
    await cluster.waitForNodes(WORKERS);
  }, 90_000);

  afterAll(async () => {
    try {
      if (process.env.E2E_DEBUG) {
        await new Promise((resolve) => setTimeout(resolve, Number(process.env.E2E_DEBUG)));
        for (const [name, host] of hosts) {
          const socket = join(cluster!.dir, `nm-${name}`, 'net-manager.sock');
          console.log(name, host.exec('curl', ['-s', '--unix-socket', socket, 'http://x/v1/status']));
          console.log(name, host.exec('curl', ['-s', '--unix-socket', socket, 'http://x/v1/routes']));
        }
      }
      await cluster?.stop();
      await Promise.all([...netManagers.values()].map((nm) => nm.stop()));
    } finally {
      network?.destroy();
    }
  });

  const netStatus = (name: string) => netManagerStatus(hosts.get(name)!, netManagerDir(cluster!, name));

  const createOn = async (name: string, workers: string[], command: string[]) => {
    const job = await cluster!.createJob({
      name,
      image: 'edge/busybox:latest',
      command,
      constraints: { nodes: workers },
    });
    return (await cluster!.waitForJob(
      job.id,
      (body) => allRunning(body) && (body as OverlayJob).instances.every((i) => i.namespaceIp),
      `${name} running on the overlay`,
    )) as OverlayJob;
  };

  const containerOf = (jobId: string) => {
    const running = containersWithLabel(`edge.job=${jobId}`).filter((c) => c.state === 'running');
    expect(running).toHaveLength(1);
    return running[0]!.id;
  };

  it('gives every worker its own /26 and every instance its addresses', async () => {
    const nodes = (await (await cluster!.api('/api/nodes')).json()) as { name: string; subnet?: string }[];
    const subnets = nodes.filter((node) => WORKERS.includes(node.name)).map((node) => node.subnet);
    expect(subnets).toHaveLength(3);
    for (const subnet of subnets) expect(subnet).toMatch(/^10\.(1[89]|2\d)\.\d+\.\d+\/26$/);
    expect(new Set(subnets).size).toBe(3);
  });

  it('ends a net manager non-zero (for its supervisor) when its TUN device goes away under it', async () => {
    const host = network!.addHost(WORKERS.length + 1);
    const nm = Program.start(
      'nm-doomed',
      BINS.netManager,
      ['--data-dir', join(cluster!.dir, 'nm-doomed')],
      {},
      host.execPrefix,
    );
    await nm.waitForLog(/net manager listening/);
    host.exec('ip', ['link', 'delete', 'dev', 'edge0']);
    expect(await nm.exited()).toBe(1);
    expect(nm.output).toMatch(/the data plane stopped/);
  });

  it('uses offloads where asked for (all but the last worker)', () => {
    for (const [index, name] of WORKERS.entries()) {
      const socket = join(cluster!.dir, `nm-${name}`, 'net-manager.sock');
      const status = JSON.parse(
        hosts.get(name)!.exec('curl', ['-s', '--unix-socket', socket, 'http://x/v1/status']),
      ) as { offload: boolean };
      expect(status.offload).toBe(index < WORKERS.length - 1);
    }
  });

  it('reaches a container on another worker by instance IP and service IP, over TCP, UDP and ICMP; follows a move under a running flow; stops answering after delete', async () => {
    const c = cluster!;
    const client = await createOn('ov-client', ['ov-1'], WORKLOAD);
    const web = await createOn('ov-web', ['ov-2', 'ov-3'], HTTPD);
    const clientContainer = containerOf(client.id);
    const webInstance = web.instances[0]!;
    expect(web.serviceIp).toMatch(/^10\.30\.\d+\.\d+$/);
    expect(webInstance.instanceIp).toMatch(/^10\.30\.\d+\.\d+$/);
    expect(webInstance.instanceIp).not.toBe(web.serviceIp);
    const webNode = (await (await c.api(`/api/nodes/${webInstance.nodeId}`)).json()) as {
      name: string;
      subnet: string;
    };
    expect(sameSubnet(webInstance.namespaceIp!, webNode.subnet)).toBe(true);

    // The container keeps Docker's own eth0 and gains edge0 on its worker's subnet.
    const addresses = execIn(clientContainer, ['ip', '-4', 'addr'])!;
    expect(addresses).toContain(client.instances[0]!.namespaceIp!);
    expect(addresses).toMatch(/eth0/);

    await waitFor(() => pingIn(clientContainer, webInstance.instanceIp!), 'ping by instance IP', 15_000);
    expect(fetchIn(clientContainer, webInstance.instanceIp!)).toContain('hello from edge/busybox');
    expect(fetchIn(clientContainer, web.serviceIp!)).toContain('hello from edge/busybox');
    expect(pingIn(clientContainer, web.serviceIp!)).toBe(true);
    expect(await udpEcho(clientContainer, containerOf(web.id), webInstance.instanceIp!)).toBe(
      'ping over udp',
    );

    // Same worker: a second web server on ov-1 answers through the local TUN path.
    const local = await createOn('ov-web-local', ['ov-1'], HTTPD);
    expect(fetchIn(clientContainer, local.instances[0]!.instanceIp!)).toContain('hello from edge/busybox');
    expect(fetchIn(clientContainer, local.serviceIp!)).toContain('hello from edge/busybox');

    // One flow that runs through the move and the delete: a ping to the service IP, five packets a second. Its
    // later packets take the fast path, both ways.
    const running = startPingIn(clientContainer, web.serviceIp!);
    await waitFor(() => running.replies.length >= 10, 'the running ping answered', 15_000);
    const beforeMove = netStatus('ov-1').counters;
    expect(beforeMove.fastPathHitsOut).toBeGreaterThan(0);
    expect(beforeMove.fastPathHitsIn).toBeGreaterThan(0);

    // Move the web server to the other of ov-2 and ov-3: the service IP and the instance IP follow it.
    const target = webNode.name === 'ov-2' ? 'ov-3' : 'ov-2';
    const moved = await c.api(`/api/jobs/${web.id}/move`, {
      method: 'POST',
      json: { instance: 0, to: target },
    });
    // The refusal's reasons, should it come, say which check said no.
    expect(moved.status, await moved.text()).toBe(202);
    const targetId = c.nodeIds.get(target);
    const afterMove = (await c.waitForJob(
      web.id,
      (job) =>
        allRunning(job) &&
        job.instances[0]!.nodeId === targetId &&
        containersWithLabel(`edge.job=${web.id}`).length === 1,
      `ov-web moved to ${target} and its old copy gone`,
    )) as OverlayJob;
    expect(afterMove.instances[0]!.instanceIp).toBe(webInstance.instanceIp);
    expect(afterMove.serviceIp).toBe(web.serviceIp);
    await waitFor(
      () => fetchIn(clientContainer, web.serviceIp!)?.includes('hello from edge/busybox'),
      'the service IP answering from the new worker',
      15_000,
    );
    expect(fetchIn(clientContainer, webInstance.instanceIp!)).toContain('hello from edge/busybox');
    // The running ping goes on, answered from the new worker: the fast path forgot the old route.
    const answeredBeforeMove = running.replies.length;
    await waitFor(
      () => running.replies.length >= answeredBeforeMove + 10,
      'the running ping answered after the move',
      15_000,
    );
    const followed = netStatus('ov-1').counters;
    expect(followed.fastPathForgotten).toBeGreaterThan(beforeMove.fastPathForgotten!);
    expect(followed.fastPathHitsOut).toBeGreaterThan(beforeMove.fastPathHitsOut!);
    expect(followed.fastPathHitsIn).toBeGreaterThan(beforeMove.fastPathHitsIn!);

    // Delete it: its addresses stop answering.
    expect((await c.api(`/api/jobs/${web.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(async () => (await c.api(`/api/jobs/${web.id}`)).status === 404, 'ov-web deleted', 30_000);
    await waitFor(
      () => fetchIn(clientContainer, web.serviceIp!) === undefined,
      'the service IP no longer answering',
      15_000,
    );
    expect(pingIn(clientContainer, webInstance.instanceIp!)).toBe(false);
    expect(fetchIn(clientContainer, webInstance.instanceIp!)).toBeUndefined();
    // The running ping still sends, but nothing of its flow is forwarded any more: not in C, not at all.
    const deleted = netStatus('ov-1').counters;
    const answered = running.replies.length;
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const later = netStatus('ov-1').counters;
    running.stop();
    expect(running.replies.length).toBe(answered);
    expect(later.fastPathHitsOut).toBe(deleted.fastPathHitsOut);
    expect(later.sent).toBe(deleted.sent);
    expect(later.fromTun).toBeGreaterThanOrEqual(deleted.fromTun! + 10);
  }, 180_000);

  it('encrypts between workers by default: sessions with the peers it talks to, at an MTU that leaves room for the seal', () => {
    const status = netStatus('ov-1');
    expect(status.encryption).toBe(true);
    expect(status.mtu).toBe(1420);
    expect(status.peers?.length).toBeGreaterThan(0);
    expect(status.peers?.every((peer) => peer.publicKey.length === 44)).toBe(true);
    expect(status.peers?.some((peer) => peer.session === 'established')).toBe(true);
    expect(status.counters.udpOpened).toBeGreaterThan(0);
    // AES-256-GCM between workers whose CPUs both have AES instructions, ChaCha20-Poly1305 with the one that
    // offers only that.
    const nodeIds = cluster!.nodeIds;
    const cipherWith = (worker: string) =>
      status.peers?.find((peer) => peer.nodeId === nodeIds.get(worker) && peer.session === 'established')
        ?.cipher;
    expect(cipherWith('ov-2')).toBe(hasAesInstructions() ? 'aes-256-gcm' : 'chacha20-poly1305');
    expect(cipherWith('ov-3')).toBe('chacha20-poly1305');
    expect(status.counters.udpSealed).toBeGreaterThan(0);
    // The keys the cluster manager hands out are the ones the net managers announced.
    expect(status.peers?.map((peer) => peer.nodeId).sort()).toEqual(
      [...new Set(status.peers?.map((peer) => peer.nodeId))].sort(),
    );
  });

  it("drops a stranger's tunnel packets (plain or forged), even one that claims a real instance's address, and serves its peers on", async () => {
    const client = await createOn('ov-peer-client', ['ov-1'], WORKLOAD);
    const far = await createOn('ov-peer-far', ['ov-2'], WORKLOAD);
    const clientContainer = containerOf(client.id);
    await waitFor(() => pingIn(clientContainer, far.instances[0]!.instanceIp!), 'ping to ov-2', 15_000);
    const before = netStatus('ov-1').counters;
    // From this (root) namespace, not a worker: datagrams to ov-1's overlay port that carry a UDP packet for its
    // container, one claiming ov-peer-far's instance IP (a real instance, on ov-2), one an address nobody owns;
    // then the same as data messages with a made-up session, and with a real session's index but no key.
    const stranger = createSocket('udp4');
    const target = client.instances[0]!.instanceIp!;
    const send = (datagram: Buffer) =>
      new Promise<void>((resolve, reject) =>
        stranger.send(datagram, 50103, hosts.get('ov-1')!.address, (error) =>
          error ? reject(error) : resolve(),
        ),
      );
    for (const src of [far.instances[0]!.instanceIp!, '10.30.255.254']) {
      const packet = buildPacket({
        protocol: PROTOCOL_UDP,
        src,
        dst: target,
        dstPort: 9,
        payload: Buffer.from('x'),
      });
      await send(packet);
      const header = Buffer.alloc(16);
      header[0] = 4;
      header.writeUInt32LE(0x1234567, 4);
      await send(Buffer.concat([header, packet, Buffer.alloc(16)]));
    }
    stranger.close();
    await waitFor(() => {
      const now = netStatus('ov-1').counters;
      return (
        now.udpPlaintext! >= before.udpPlaintext! + 2 &&
        now.udpUnknownSession! >= before.udpUnknownSession! + 2
      );
    }, 'the stranger packets dropped by the addon');
    expect(netStatus('ov-1').counters.delivered).toBe(before.delivered);
    // The real peers go on: ov-1's container reaches ov-2's, and its answers come back.
    await waitFor(
      () => pingIn(clientContainer, far.instances[0]!.instanceIp!),
      'ping to ov-2 after the strangers',
      15_000,
    );
  }, 90_000);

  it('rotates session keys under traffic (every 3 s here) without losing more than a packet', async () => {
    const client = await createOn('ov-rekey-client', ['ov-2'], WORKLOAD);
    const far = await createOn('ov-rekey-far', ['ov-3'], WORKLOAD);
    const clientContainer = containerOf(client.id);
    await waitFor(() => pingIn(clientContainer, far.instances[0]!.instanceIp!), 'ping to ov-3', 15_000);
    const before = netStatus('ov-2').counters;
    const farBefore = netStatus('ov-3').counters;
    // 90 pings 0.2 s apart: 18 s; a rekey every 3 to 4 s (the timers tick once a second).
    const output =
      execIn(
        clientContainer,
        ['ping', '-c', '90', '-i', '0.2', '-W', '2', far.instances[0]!.instanceIp!],
        30_000,
      ) ?? '';
    const received = Number(/(\d+) packets received/.exec(output)?.[1] ?? 0);
    const after = netStatus('ov-2').counters;
    const rekeys =
      after.handshakesCompleted! -
      before.handshakesCompleted! +
      (after.handshakesAnswered! - before.handshakesAnswered!);
    expect(rekeys).toBeGreaterThanOrEqual(3);
    // On a miss, say where packets went: the drop counters of both ends over the run.
    const drops = (name: string, from: Record<string, number>) =>
      Object.entries(netStatus(name).counters)
        .filter(
          ([counter, value]) =>
            /^udp[A-Z]|Dropped|noSession|spoofed|Rechecks/.test(counter) && value !== from[counter],
        )
        .map(([counter, value]) => `${name} ${counter} +${value - (from[counter] ?? 0)}`);
    // ... and what the cluster manager saw meanwhile (a node going offline takes its routes away for a while).
    const events = (await (await cluster!.api('/api/events?limit=40')).json()) as {
      ts: string;
      message: string;
    }[];
    expect(
      received,
      [
        ...drops('ov-2', before),
        ...drops('ov-3', farBefore),
        ...events.map(({ ts, message }) => `${ts} ${message}`),
      ].join(', '),
    ).toBeGreaterThanOrEqual(89);
  }, 90_000);

  /** A UDP datagram from one container's network namespace to another's, echoed back (node run by nsenter). */
  async function udpEcho(fromContainer: string, toContainer: string, ip: string): Promise<string> {
    const serverPid = inspectContainer(toContainer).State.Pid;
    const clientPid = inspectContainer(fromContainer).State.Pid;
    const server = spawn(
      'nsenter',
      [
        ...['-t', String(serverPid), '-n', process.execPath, '-e'],
        `const s=require('dgram').createSocket('udp4');s.on('message',(m,r)=>s.send(m,r.port,r.address,()=>process.exit(0)));s.bind(5353,()=>console.log('ready'));setTimeout(()=>process.exit(1),15000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((resolve) => server.stdout.once('data', resolve));
    const reply = execFileSync(
      'nsenter',
      [
        ...['-t', String(clientPid), '-n', process.execPath, '-e'],
        `const s=require('dgram').createSocket('udp4');const t=setInterval(()=>s.send('ping over udp',5353,'${ip}'),500);s.send('ping over udp',5353,'${ip}');s.on('message',(m)=>{console.log(m.toString());clearInterval(t);process.exit(0)});setTimeout(()=>process.exit(1),10000)`,
      ],
      { encoding: 'utf8', timeout: 12_000 },
    );
    server.kill();
    return reply.trim();
  }
});

function sameSubnet(ip: string, cidr: string): boolean {
  const range = parseCidr(cidr);
  return ipToNumber(ip) >= range.first && ipToNumber(ip) <= range.last;
}
