import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddressBook, instanceKey } from '../../net-manager/plumbing/address-book.js';
import { AttachError, ContainerLink, vethNameFor } from '../../net-manager/plumbing/container-link.js';
import { CommandRunner } from '../../net-manager/plumbing/ip-command.js';
import { OverlayLinks } from '../../net-manager/plumbing/overlay-links.js';
import { removeContainersWithLabel } from '../helpers/docker.js';

/**
 * The worker side of the overlay with real parts: a network namespace stands in for a worker (its FORWARD policy
 * DROP and strict rp_filter, as Docker and a hardened host leave them), a persistent TUN for the one the net
 * manager opens, and busybox containers attached to its bridge.
 */
const NS = 'nmplumb-1';
const OWN_NAMESPACE = /^nmplumb-/;
const LABEL = 'edge.test=plumbing';
const SUBNET = '10.18.0.64/26';
const GATEWAY = '10.18.0.65';
const TUN = 'edge0';
const BRIDGE = 'edgebr0';
const CHAIN = 'EDGE-OVERLAY';
const DATA_DIR_PREFIX = 'edge-nm-plumbing-';

function run(program: string, args: string[], timeoutMs = 20_000): string {
  return execFileSync(program, args, {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
function inWorker(args: string[]): string {
  return run('ip', ['netns', 'exec', NS, ...args]);
}
function succeeds(program: string, args: string[]): boolean {
  try {
    run(program, args);
    return true;
  } catch {
    return false;
  }
}
function docker(...args: string[]): string {
  return run('docker', args).trim();
}
/** Debian's iputils ping where installed, else busybox's (the test image's tool on the host). */
const PING = succeeds('ping', ['-V']) ? ['ping'] : ['busybox', 'ping'];

/** Network namespaces of this test, whoever left them (a crashed earlier run). */
function removeOwnNamespaces(): void {
  for (const line of run('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name && OWN_NAMESPACE.test(name)) succeeds('ip', ['netns', 'delete', name]);
  }
}

function startContainer(): { id: string; pid: number } {
  const id = docker('run', '-d', '--label', LABEL, 'edge/busybox:latest', 'sleep', '3600');
  return { id, pid: Number(docker('inspect', '-f', '{{.State.Pid}}', id)) };
}

/** The routes of a container through Docker's eth0 (busybox `ip route` knows no filters). */
function eth0Routes(containerId: string): string {
  return docker('exec', containerId, 'ip', 'route')
    .split('\n')
    .filter((line) => line.includes('dev eth0'))
    .join('\n');
}

function linkNames(): string[] {
  return (JSON.parse(inWorker(['ip', '-j', 'link', 'show'])) as { ifname: string }[]).map(
    (link) => link.ifname,
  );
}

/** Packets that went through one of our chain's rules, by rule. */
function chainCounters(): Map<string, number> {
  const counters = new Map<string, number>();
  for (const line of inWorker(['iptables', '-w', '-L', CHAIN, '-v', '-x', '-n']).split('\n').slice(2)) {
    const [packets, , , , , inIf, outIf] = line.trim().split(/\s+/);
    if (packets) counters.set(`${inIf}>${outIf}`, Number(packets));
  }
  return counters;
}

/** What setUp controls, to compare before and after a second run. */
/**
 * The worker's links, addresses, routes, firewall and sysctls as text. The TUN's carrier is left out: it follows
 * whether some process holds the device open, and the kernel's link watcher applies that up to a second late
 * (after the TUN test's python process exits, say), which is not setUp's doing.
 */
function workerState(): string {
  const withoutTunCarrier = (text: string) =>
    text
      .split('\n')
      .map((line) =>
        line.includes(`${TUN}:`)
          ? line.replace('NO-CARRIER,', '').replace(/ state (UP|DOWN|UNKNOWN)/, '')
          : line,
      )
      .join('\n');
  return [
    withoutTunCarrier(inWorker(['ip', 'link', 'show'])),
    withoutTunCarrier(inWorker(['ip', 'addr', 'show'])),
    // A route through the TUN says `linkdown` while it has no carrier (see above).
    inWorker(['ip', 'route', 'show']).replace(/ linkdown/g, ''),
    inWorker(['iptables', '-w', '-S']),
    inWorker([
      'sysctl',
      'net.ipv4.ip_forward',
      `net.ipv4.conf.${TUN}.rp_filter`,
      'net.ipv4.conf.all.rp_filter',
    ]),
  ].join('\n');
}

/**
 * Writes ICMP echo requests into the TUN as the net manager would after receiving them from a peer worker, and
 * waits for a reply to come back out of the TUN. Python stands in for the TUN addon (ioctl TUNSETIFF). Up to
 * three tries: the TUN was brought up here before anyone opened it, and the kernel keeps dropping what it sends
 * until its link watcher (run at most once a second) activates the queue after the carrier came on.
 */
const TUN_PING = `
import fcntl, json, os, select, socket, struct, sys, time
src, dst = sys.argv[1], sys.argv[2]
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'${TUN}', 0x0001 | 0x1000))
def csum(data):
    if len(data) % 2: data += b'\\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16: total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff
def echo_request(seq):
    icmp = struct.pack('!BBHHH', 8, 0, 0, 0x4242, seq) + b'edge overlay test'
    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
    head = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return head[:10] + struct.pack('!H', csum(head)) + head[12:] + icmp
seen = []
for seq in range(1, 4):
    os.write(fd, echo_request(seq))
    deadline = time.time() + 1
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
        if not ready: break
        packet = os.read(fd, 4096)
        if packet[0] >> 4 != 4: continue
        seen.append('%s>%s proto %d' % (socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20]), packet[9]))
        if packet[9] == 1 and packet[20] == 0 and socket.inet_ntoa(packet[12:16]) == dst and socket.inet_ntoa(packet[16:20]) == src:
            print(json.dumps({'reply': True, 'tries': seq})); sys.exit(0)
print(json.dumps({'reply': False, 'seen': seen})); sys.exit(1)
`;

describe('net manager plumbing (worker namespace, TUN, bridge, veths into containers)', () => {
  const runner = new CommandRunner(['ip', 'netns', 'exec', NS]);
  const logger = pino({ level: 'silent' });
  const links = new OverlayLinks({ runner, logger, tun: TUN, bridge: BRIDGE });
  const containerLink = new ContainerLink({ runner, bridge: BRIDGE });
  let dataDir: string;
  let book: AddressBook;
  let a: { id: string; pid: number; ip: string; eth0: string; defaultRoute: string };
  let b: { id: string; pid: number; ip: string };
  const attachMs: number[] = [];
  const tunTries: number[] = [];

  async function attach(container: { id: string; pid: number }, key: string) {
    const namespaceIp = await book.allocate(key);
    const started = performance.now();
    const result = await containerLink.attach({
      containerId: container.id,
      pid: container.pid,
      namespaceIp,
      gateway: GATEWAY,
      prefixLength: 26,
    });
    attachMs.push(performance.now() - started);
    return { ...result, namespaceIp };
  }

  beforeAll(() => {
    removeContainersWithLabel(LABEL);
    removeOwnNamespaces();
    for (const name of readdirSync(tmpdir())) {
      if (name.startsWith(DATA_DIR_PREFIX)) rmSync(join(tmpdir(), name), { recursive: true, force: true });
    }
    run('ip', ['netns', 'add', NS]);
    inWorker(['ip', 'link', 'set', 'lo', 'up']);
    inWorker(['ip', 'tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
    inWorker(['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    inWorker(['sysctl', '-q', '-w', 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.ip_forward=0']);
    dataDir = mkdtempSync(join(tmpdir(), DATA_DIR_PREFIX));
  });

  afterAll(() => {
    removeContainersWithLabel(LABEL);
    removeOwnNamespaces();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (tunTries.length > 0)
      console.log(`echo requests written into the TUN until a reply: ${tunTries.join(', ')}`);
    if (attachMs.length > 0) {
      const sorted = [...attachMs].sort((x, y) => x - y);
      console.log(
        `attach took ${sorted.map((ms) => ms.toFixed(1)).join(', ')} ms (median ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)} ms)`,
      );
    }
  });

  it('sets up the TUN route, the bridge, forwarding and the firewall', async () => {
    expect(await links.cleanUpLeftovers()).toEqual([]);
    const result = await links.setUp(SUBNET);
    expect(result).toEqual({ gateway: GATEWAY, prefixLength: 26, firewall: 'configured' });

    expect(inWorker(['ip', 'link', 'show', 'dev', TUN])).toMatch(/mtu 1450/);
    expect(inWorker(['ip', 'route', 'show', '10.16.0.0/12'])).toMatch(`10.16.0.0/12 dev ${TUN}`);
    const bridge = inWorker(['ip', '-d', 'addr', 'show', 'dev', BRIDGE]);
    expect(bridge).toMatch(/mtu 1450/);
    expect(bridge).toMatch(/bridge/);
    expect(bridge).toMatch(`inet ${GATEWAY}/26`);
    expect(bridge).toMatch('link/ether 02:ed:0a:12:00:41');
    expect(inWorker(['sysctl', '-n', 'net.ipv4.ip_forward']).trim()).toBe('1');
    expect(inWorker(['sysctl', '-n', `net.ipv4.conf.${TUN}.rp_filter`]).trim()).toBe('2');
    expect(inWorker(['sysctl', '-n', 'net.ipv4.conf.all.rp_filter']).trim()).toBe('2');
    const rules = inWorker(['iptables', '-w', '-S']);
    expect(rules).toMatch(`-A FORWARD -j ${CHAIN}`);
    expect(rules).toMatch(`-A ${CHAIN} -i ${TUN} -j ACCEPT`);
    expect(rules).toMatch(`-A ${CHAIN} -o ${TUN} -j ACCEPT`);
    expect(rules).toMatch(`-A ${CHAIN} -i ${BRIDGE} -o ${BRIDGE} -j ACCEPT`);
    book = await AddressBook.load(dataDir, SUBNET, logger);
  });

  it('attaches two containers: edge0 with the namespace IP, MTU 1450 and the overlay route via the gateway', async () => {
    const first = startContainer();
    const second = startContainer();
    const eth0 = docker('exec', first.id, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0');
    const defaultRoute = eth0Routes(first.id);
    expect(defaultRoute).toMatch(/^default via .* dev eth0/m);

    if (existsSync('/proc/sys/net/ipv6')) {
      // Docker turns IPv6 off in a container unless its network has it on; on such a network a new interface
      // would get a link-local address, as edge0 then must not.
      run('nsenter', [
        '-t',
        String(first.pid),
        '-n',
        'sysctl',
        '-q',
        '-w',
        'net.ipv6.conf.default.disable_ipv6=0',
      ]);
    }
    const attachedA = await attach(first, instanceKey('job-a', 0));
    const attachedB = await attach(second, instanceKey('job-b', 0));
    expect(attachedA).toMatchObject({
      veth: vethNameFor(first.id),
      interface: 'edge0',
      alreadyAttached: false,
    });
    expect(attachedA.veth).toBe(`ve-${first.id.slice(0, 12)}`);
    a = { ...first, ip: attachedA.namespaceIp, eth0, defaultRoute };
    b = { ...second, ip: attachedB.namespaceIp };
    expect([a.ip, b.ip]).toEqual(['10.18.0.66', '10.18.0.67']);

    for (const container of [a, b]) {
      const edge0 = docker('exec', container.id, 'ip', 'addr', 'show', 'dev', 'edge0');
      expect(edge0).toMatch(/mtu 1450/);
      expect(edge0).toMatch(/[<,]UP,LOWER_UP[,>]/);
      expect(edge0).toMatch(`inet ${container.ip}/26`);
      expect(docker('exec', container.id, 'ip', 'route')).toMatch(`10.16.0.0/12 via ${GATEWAY} dev edge0`);
      // IPv4 only: no link-local address, so no router solicitations into the overlay.
      expect(
        run('nsenter', ['-t', String(container.pid), '-n', 'ip', '-6', 'addr', 'show', 'dev', 'edge0']),
      ).toBe('');
    }
    // Docker's own networking is left as it was.
    expect(docker('exec', a.id, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0')).toBe(eth0);
    expect(eth0Routes(a.id)).toBe(defaultRoute);

    const veths = await containerLink.attachedVeths();
    expect(veths.sort()).toEqual([vethNameFor(a.id), vethNameFor(b.id)].sort());
    // The gateway's MAC stays put as ports come and go (containers cache it).
    expect(inWorker(['ip', 'link', 'show', 'dev', BRIDGE])).toMatch('link/ether 02:ed:0a:12:00:41');
    const hostEnd = inWorker(['ip', 'link', 'show', 'dev', vethNameFor(a.id)]);
    expect(hostEnd).toMatch(`master ${BRIDGE}`);
    expect(hostEnd).toMatch(/mtu 1450/);
    expect(hostEnd).toMatch(/state UP/);
    for (const device of [BRIDGE, vethNameFor(a.id)]) {
      expect(inWorker(['ip', '-6', 'addr', 'show', 'dev', device])).toBe('');
    }
  });

  it('lets the containers reach each other and the worker reach both, through FORWARD policy DROP', () => {
    docker('exec', a.id, 'ping', '-c', '1', '-W', '2', b.ip);
    docker('exec', b.id, 'ping', '-c', '1', '-W', '2', a.ip);
    for (const ip of [a.ip, b.ip]) inWorker([...PING, '-c', '1', '-W', '2', ip]);
    if (inWorker(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']).trim() === '1') {
      // br_netfilter: frames between two ports of the bridge go through iptables FORWARD.
      expect(chainCounters().get(`${BRIDGE}>${BRIDGE}`)).toBeGreaterThan(0);
    }
  });

  it('forwards overlay traffic from a container into the TUN', () => {
    const before = chainCounters().get(`*>${TUN}`) ?? 0;
    // No one reads the TUN here: the ping gets no answer, but it must have been forwarded to the TUN.
    expect(succeeds('docker', ['exec', a.id, 'ping', '-c', '1', '-W', '1', '10.30.0.9'])).toBe(false);
    expect(chainCounters().get(`*>${TUN}`)).toBeGreaterThan(before);
  });

  // python3 is there wherever the TUN addon builds: node-gyp needs it.
  it('accepts packets written into the TUN from overlay sources and routes the replies back into it', () => {
    const script = join(dataDir, 'tun-ping.py');
    writeFileSync(script, TUN_PING);
    // Another worker's namespace IP, and an instance IP (the net manager rewrites to those).
    for (const source of ['10.18.1.70', '10.30.0.9']) {
      const result = JSON.parse(inWorker(['python3', script, source, a.ip]));
      tunTries.push(result.tries);
      expect(result).toMatchObject({ reply: true });
    }
  });

  it('treats attaching an attached container again as done', async () => {
    const again = await containerLink.attach({
      containerId: a.id,
      pid: a.pid,
      namespaceIp: a.ip,
      gateway: GATEWAY,
      prefixLength: 26,
    });
    expect(again).toEqual({ veth: vethNameFor(a.id), interface: 'edge0', alreadyAttached: true });
    expect(await containerLink.attachedVeths()).toHaveLength(2);
    expect(
      docker('exec', a.id, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'edge0').match(/inet /g),
    ).toHaveLength(1);
    docker('exec', a.id, 'ping', '-c', '1', '-W', '2', b.ip);
  });

  it('fails clearly for a stopped container, an edge0 that is not ours and a process of the worker itself', async () => {
    const stopped = startContainer();
    docker('stop', '-t', '0', stopped.id);
    const spec = { namespaceIp: '10.18.0.100', gateway: GATEWAY, prefixLength: 26 };
    const gone = containerLink.attach({ ...spec, containerId: stopped.id, pid: stopped.pid });
    await expect(gone).rejects.toThrow(AttachError);
    await expect(gone).rejects.toMatchObject({ code: 'container_gone' });
    await expect(gone).rejects.toThrow(/is not running: its process \d+ is gone/);
    expect(await containerLink.attachedVeths()).not.toContain(vethNameFor(stopped.id));

    const taken = startContainer();
    run('nsenter', [
      '-t',
      String(taken.pid),
      '-n',
      'ip',
      'link',
      'add',
      'edge0',
      'type',
      'veth',
      'peer',
      'other0',
    ]);
    const refused = containerLink.attach({ ...spec, containerId: taken.id, pid: taken.pid });
    await expect(refused).rejects.toMatchObject({ code: 'interface_taken' });
    await expect(refused).rejects.toThrow(/already has an interface edge0/);
    expect(await containerLink.attachedVeths()).not.toContain(vethNameFor(taken.id));

    const workerProcess = spawn('ip', ['netns', 'exec', NS, 'sleep', '30'], { stdio: 'ignore' });
    try {
      const pid = workerProcess.pid!;
      // `ip netns exec` execs sleep in place once it has entered the namespace.
      for (let tries = 0; tries < 50 && !run('readlink', [`/proc/${pid}/exe`]).includes('sleep'); tries++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const shared = containerLink.attach({ ...spec, containerId: 'f'.repeat(64), pid });
      await expect(shared).rejects.toMatchObject({ code: 'shares_worker_network' });
    } finally {
      workerProcess.kill();
    }
  });

  it('detaches: the veth pair goes, twice is fine', async () => {
    const extra = startContainer();
    await attach(extra, instanceKey('job-c', 0));
    expect(await containerLink.attachedVeths()).toContain(vethNameFor(extra.id));
    await containerLink.detach(extra.id);
    await containerLink.detach(extra.id);
    await book.release(instanceKey('job-c', 0));
    expect(await containerLink.attachedVeths()).not.toContain(vethNameFor(extra.id));
    expect(succeeds('docker', ['exec', extra.id, 'ip', 'link', 'show', 'dev', 'edge0'])).toBe(false);
    for (let round = 0; round < 3; round++) {
      await attach(extra, instanceKey('job-c', 0));
      await containerLink.detach(extra.id);
    }
  });

  it('runs setUp twice to the same state', async () => {
    const before = workerState();
    expect(await links.setUp(SUBNET)).toMatchObject({ firewall: 'configured' });
    expect(workerState()).toBe(before);
    expect(
      inWorker(['iptables', '-w', '-S', 'FORWARD']).match(new RegExp(`-j ${CHAIN}$`, 'gm')),
    ).toHaveLength(1);
    docker('exec', a.id, 'ping', '-c', '1', '-W', '2', b.ip);
  });

  it('moves the bridge to the gateway of a new subnet', async () => {
    const bridgeAddresses = () =>
      inWorker(['ip', '-o', '-4', 'addr', 'show', 'dev', BRIDGE])
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split(/\s+/)[3]);
    expect(await links.setUp('10.18.1.0/26')).toMatchObject({ gateway: '10.18.1.1', prefixLength: 26 });
    expect(bridgeAddresses()).toEqual(['10.18.1.1/26']);
    await links.setUp(SUBNET);
    expect(bridgeAddresses()).toEqual([`${GATEWAY}/26`]);
  });

  it('warns rather than fails without iptables, and leaves the rest in place', async () => {
    // `ip` and `sysctl` on PATH, iptables not: a machine without the iptables package.
    const bin = join(dataDir, 'bin-without-iptables');
    mkdirSync(bin, { recursive: true });
    for (const tool of ['ip', 'sysctl'])
      symlinkSync(run('sh', ['-c', `command -v ${tool}`]).trim(), join(bin, tool));
    const warnings: string[] = [];
    const recording = pino(
      { level: 'warn' },
      { write: (line: string) => warnings.push(JSON.parse(line).msg) },
    );
    const bare = new CommandRunner(['ip', 'netns', 'exec', NS, 'env', `PATH=${bin}`]);
    const before = workerState();
    const withoutFirewall = new OverlayLinks({ runner: bare, logger: recording, tun: TUN, bridge: BRIDGE });
    expect(await withoutFirewall.setUp(SUBNET)).toMatchObject({ firewall: 'unavailable' });
    expect(warnings).toEqual([expect.stringMatching(/iptables is not installed/)]);
    expect(workerState()).toBe(before);
  });

  it('reports a failed command with its command line and stderr', async () => {
    await expect(runner.ipBatch(['link show dev lo', 'link show dev nmplumb-nope'])).rejects.toThrow(
      /`ip netns exec nmplumb-1 ip -batch -` failed at `ip link show dev nmplumb-nope`: Device "nmplumb-nope" does not exist/,
    );
    await expect(runner.run(['nmplumb-no-such-program'])).rejects.toMatchObject({ notInstalled: true });
    await expect(new CommandRunner().run(['nmplumb-no-such-program'])).rejects.toThrow(/is not installed/);
  });

  it('removes what a crashed run left, and a restarted one attaches the same addresses again', async () => {
    // A new process: it knows nothing but the names; the links of the "crashed" one are all still there.
    const restarted = new OverlayLinks({ runner, logger, tun: TUN, bridge: BRIDGE });
    const removed = await restarted.cleanUpLeftovers();
    expect(removed.sort()).toEqual(
      [BRIDGE, `iptables chain ${CHAIN}`, vethNameFor(a.id), vethNameFor(b.id)].sort(),
    );
    expect(linkNames().sort()).toEqual([TUN, 'lo'].sort());
    expect(inWorker(['iptables', '-w', '-S'])).not.toMatch(CHAIN);
    expect(succeeds('docker', ['exec', a.id, 'ip', 'link', 'show', 'dev', 'edge0'])).toBe(false);

    await restarted.setUp(SUBNET);
    const reloaded = await AddressBook.load(dataDir, SUBNET, logger);
    expect(reloaded.addressOf(instanceKey('job-a', 0))).toBe(a.ip);
    expect(reloaded.addressOf(instanceKey('job-b', 0))).toBe(b.ip);
    book = reloaded;
    await attach(a, instanceKey('job-a', 0));
    await attach(b, instanceKey('job-b', 0));
    docker('exec', a.id, 'ping', '-c', '1', '-W', '2', b.ip);
  });

  it('tears down to nothing but lo once the TUN is closed', async () => {
    const removed = await links.tearDown();
    expect(removed).toContain(BRIDGE);
    expect(removed).toContain(vethNameFor(a.id));
    inWorker(['ip', 'tuntap', 'del', 'dev', TUN, 'mode', 'tun']);
    expect(linkNames()).toEqual(['lo']);
    expect(inWorker(['ip', 'route', 'show'])).toBe('');
    expect(inWorker(['iptables', '-w', '-S']).trim().split('\n')).toEqual([
      '-P INPUT ACCEPT',
      '-P FORWARD DROP',
      '-P OUTPUT ACCEPT',
    ]);
    expect(await links.tearDown()).toEqual([]);
  });
});
