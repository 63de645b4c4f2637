/**
 * TCP throughput and ping RTT through two TUN devices and the addon's batched I/O, without the rest of the net
 * manager:
 *
 *   namespace nmtun-bench-a: iperf3 client -> nmtun0 10.79.0.1 -> forwarder -> UDP 10.78.0.1:50103 --veth--+
 *   namespace nmtun-bench-b: iperf3 server <- nmtun0 10.79.0.2 <- forwarder <- UDP 10.78.0.2:50103 <-------+
 *
 * Each forwarder only moves bytes: TUN readBatch -> UDP sendBatch, UDP recvBatch -> TUN writeBatch. Compared,
 * interleaved round by round: one packet per addon call (the per-packet forwarder), batches of 64, batches of 64
 * with offloads (TSO super-packets cut in the addon, UDP GSO/GRO, segments glued on the way back in), the same
 * with the addon's fast path (each flow's first packet comes to JavaScript, which installs it; its later packets
 * are forwarded in the poll callback in C, as the net manager does after its translator decided), and a
 * minimal forwarder in C (reference-forwarder.c: epoll, one read/sendto per packet, no JavaScript), the floor
 * for any user-space TUN data plane here. The RTT of the plain veth between the namespaces is measured in the
 * same rounds.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, it } from 'vitest';
import { ADDON_PATH } from '../../net-manager/tun.js';
import { median, report } from './report.js';

const ROUNDS = Math.min(10, Math.max(1, Number(process.env.BENCH_TUN_ROUNDS ?? 3)));
const SECONDS = Math.min(60, Math.max(2, Number(process.env.BENCH_TUN_SECONDS ?? 10)));
/** Pings per round and path, 10 ms apart (the overlay bench's spacing). */
const PINGS = 200;
const NS_A = 'nmtun-bench-a';
const NS_B = 'nmtun-bench-b';

interface Config {
  what: string;
  /** The C reference forwarder instead of the addon. */
  reference?: boolean;
  batch: number;
  /** Batches per wakeup before going back to the event loop (Infinity: until EAGAIN). */
  rounds: number;
  offload: boolean;
  /** The addon's fast path: JavaScript sees each flow's first packet only. */
  fastPath?: boolean;
}

const CONFIGS: Config[] = [
  {
    what: 'addon, per packet (batch 1, drained to EAGAIN)',
    batch: 1,
    rounds: Number.POSITIVE_INFINITY,
    offload: false,
  },
  { what: 'addon, batches of 64', batch: 64, rounds: Number.POSITIVE_INFINITY, offload: false },
  {
    what: 'addon, batches of 64 + offloads (TSO cut, UDP GSO/GRO, glued)',
    batch: 64,
    rounds: Number.POSITIVE_INFINITY,
    offload: true,
  },
  {
    what: 'addon fast path (flows in C after their first packet) + offloads',
    batch: 64,
    rounds: Number.POSITIVE_INFINITY,
    offload: true,
    fastPath: true,
  },
  { what: 'C reference (epoll, 1 packet per syscall)', reference: true, batch: 1, rounds: 1, offload: false },
];

/** The forwarder, straight on the addon. argv: tunCidr localAddress peerAddress batch rounds offload. */
const FORWARDER = `
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
const { Tun, Udp } = createRequire(import.meta.url)(${JSON.stringify(ADDON_PATH)});
const [cidr, local, peer, batchText, roundsText, offloadText, fastText] = process.argv.slice(2);
const BATCH = Number(batchText);
const ROUNDS = Number(roundsText);
const OFFLOAD = offloadText === '1';
const SLOT = 2048;
const PORT = 50103;
const tun = new Tun('nmtun0', OFFLOAD);
const ip = (...args) => execFileSync('ip', args);
ip('addr', 'add', cidr, 'dev', tun.name);
ip('link', 'set', 'dev', tun.name, 'mtu', '1400', 'up');
const udp = new Udp(local, PORT, OFFLOAD);
const side = () => ({ buffer: Buffer.alloc(SLOT * BATCH), lengths: new Int32Array(BATCH), offsets: Int32Array.from({ length: BATCH }, (_, i) => i * SLOT) });
const out = side();
const back = side();
const peers = new Uint32Array(BATCH).fill(peer.split('.').reduce((value, part) => value * 256 + Number(part), 0));
const peerPorts = new Uint16Array(BATCH).fill(PORT);
const senders = new Uint32Array(BATCH);
const senderPorts = new Uint16Array(BATCH);
// Fast path: what reaches JavaScript is a flow's first packet; it installs the flow (addresses kept as they are:
// out to the peer, in from it) so that the flow's later packets stay in C.
const FAST = fastText === '1';
if (FAST) tun.linkFastPath(udp, 1024);
function install(direction, buffer, offset, sender, senderPort) {
  const protocol = buffer[offset + 9];
  const l4 = offset + (buffer[offset] & 15) * 4;
  const src = buffer.readUInt32BE(offset + 12);
  const dst = buffer.readUInt32BE(offset + 16);
  let srcPort;
  let dstPort;
  if (protocol === 6 || protocol === 17) {
    srcPort = buffer.readUInt16BE(l4);
    dstPort = buffer.readUInt16BE(l4 + 2);
  } else if (protocol === 1 && (buffer[l4] === 0 || buffer[l4] === 8)) {
    srcPort = dstPort = buffer.readUInt16BE(l4 + 4);
  } else return;
  tun.installFlow(direction, protocol, src, srcPort, dst, dstPort, src, dst, -1, sender, senderPort, src, dst, 0);
}
tun.onReadable(() => {
  for (let round = 0; round < ROUNDS; round++) {
    const count = tun.readBatch(out.buffer, SLOT, out.lengths);
    if (count === 0) break;
    if (FAST) for (let i = 0; i < count; i++) install(0, out.buffer, i * SLOT, peers[0], PORT);
    udp.sendBatch(out.buffer, out.offsets, out.lengths, peers, peerPorts, count);
    if (count < BATCH && BATCH > 1) break;
  }
});
udp.onReadable(() => {
  for (let round = 0; round < ROUNDS; round++) {
    const count = udp.recvBatch(back.buffer, SLOT, back.lengths, senders, senderPorts);
    if (count === 0) break;
    if (FAST) for (let i = 0; i < count; i++) install(1, back.buffer, i * SLOT, senders[i], senderPorts[i]);
    tun.writeBatch(back.buffer, back.offsets, back.lengths, count);
    if (count < BATCH && BATCH > 1) break;
  }
});
process.on('SIGTERM', () => {
  process.stdout.write(JSON.stringify({ tun: tun.stats(), udp: udp.stats(), fastPath: FAST ? tun.fastPathStats() : null }) + '\\n');
  tun.close();
  udp.close();
});
process.stdout.write('ready\\n');
`;

let dir = '';

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function removeNamespaces(): void {
  for (const namespace of [NS_A, NS_B]) {
    try {
      ip('netns', 'delete', namespace);
    } catch {
      // not there
    }
  }
}

function start(
  namespace: string,
  args: string[],
): { child: ChildProcess; ready: Promise<void>; output: () => string } {
  const child = spawn('ip', ['netns', 'exec', namespace, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start: ${output}`)), 10_000);
    const check = (chunk: Buffer) => {
      output += chunk;
      if (/ready|listening/i.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.stderr!.on('data', check);
    child.once('exit', () => reject(new Error(`${args.join(' ')} exited: ${output}`)));
  });
  ready.catch(() => undefined);
  return { child, ready, output: () => output };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

interface Sample {
  mbits: number;
  retransmits: number;
  rttMs: number;
  underlayRttMs: number;
}

/** Median RTT of PINGS pings 10 ms apart from namespace a. */
function pingMedianMs(address: string): number {
  const output = execFileSync(
    'ip',
    ['netns', 'exec', NS_A, 'ping', '-n', '-c', String(PINGS), '-i', '0.01', address],
    { encoding: 'utf8', timeout: 60_000 },
  );
  return median([...output.matchAll(/time=([\d.]+) ms/g)].map((match) => Number(match[1])));
}

/** One iperf3 run and one ping series through fresh forwarders, and the veth's RTT right after. */
async function measure(config: Config): Promise<Sample> {
  const command = (cidr: string, local: string, peer: string): string[] => {
    if (config.reference) return [join(dir, 'reference-forwarder'), cidr, local, peer];
    const rounds = Number.isFinite(config.rounds) ? String(config.rounds) : '1e9';
    const flags = [String(config.batch), rounds, config.offload ? '1' : '0', config.fastPath ? '1' : '0'];
    return [process.execPath, join(dir, 'forwarder.mjs'), cidr, local, peer, ...flags];
  };
  const a = start(NS_A, command('10.79.0.1/24', '10.78.0.1', '10.78.0.2'));
  const b = start(NS_B, command('10.79.0.2/24', '10.78.0.2', '10.78.0.1'));
  let server: ReturnType<typeof start> | undefined;
  try {
    await Promise.all([a.ready, b.ready]);
    server = start(NS_B, ['iperf3', '-s', '-1', '-B', '10.79.0.2', '--forceflush']);
    await server.ready;
    const json = execFileSync(
      'ip',
      ['netns', 'exec', NS_A, 'iperf3', '-c', '10.79.0.2', '-t', String(SECONDS), '-J'],
      { encoding: 'utf8', timeout: (SECONDS + 30) * 1000 },
    );
    const end = (
      JSON.parse(json) as {
        end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits: number } };
      }
    ).end;
    return {
      mbits: end.sum_received.bits_per_second / 1e6,
      retransmits: end.sum_sent.retransmits,
      rttMs: pingMedianMs('10.79.0.2'),
      underlayRttMs: pingMedianMs('10.78.0.2'),
    };
  } finally {
    await Promise.all([stop(a.child), stop(b.child), ...(server ? [stop(server.child)] : [])]);
  }
}

beforeAll(() => {
  execFileSync('iperf3', ['--version'], { stdio: 'ignore' }); // apt-get install -y iperf3
  removeNamespaces();
  dir = mkdtempSync(join(tmpdir(), 'nmtun-bench-'));
  writeFileSync(join(dir, 'forwarder.mjs'), FORWARDER);
  // The C compiler node-gyp needs for the addon builds the reference forwarder too.
  execFileSync('cc', [
    '-O2',
    '-o',
    join(dir, 'reference-forwarder'),
    join(import.meta.dirname, 'reference-forwarder.c'),
  ]);
  for (const namespace of [NS_A, NS_B]) {
    ip('netns', 'add', namespace);
    ip('-n', namespace, 'link', 'set', 'dev', 'lo', 'up');
  }
  ip('-n', NS_A, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth0', 'netns', NS_B);
  ip('-n', NS_A, 'addr', 'add', '10.78.0.1/24', 'dev', 'veth0');
  ip('-n', NS_B, 'addr', 'add', '10.78.0.2/24', 'dev', 'veth0');
  ip('-n', NS_A, 'link', 'set', 'dev', 'veth0', 'up');
  ip('-n', NS_B, 'link', 'set', 'dev', 'veth0', 'up');
});

afterAll(() => {
  removeNamespaces();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it(`TCP and ping through two TUN forwarders, ${ROUNDS} x ${SECONDS} s per variant, interleaved`, async () => {
  const samples = new Map<Config, Sample[]>(CONFIGS.map((config) => [config, []]));
  for (let round = 0; round < ROUNDS; round++)
    for (const config of CONFIGS) samples.get(config)!.push(await measure(config));
  const rows = CONFIGS.map((config) => {
    const runs = samples.get(config)!;
    const mbits = runs.map((run) => run.mbits);
    return {
      what: config.what,
      medianMbits: Math.round(median(mbits)),
      minMbits: Math.round(Math.min(...mbits)),
      maxMbits: Math.round(Math.max(...mbits)),
      medianRetransmits: Math.round(median(runs.map((run) => run.retransmits))),
      rttMedianMs: Number(median(runs.map((run) => run.rttMs)).toFixed(3)),
      rttOverVethMs: Number(median(runs.map((run) => run.rttMs - run.underlayRttMs)).toFixed(3)),
    };
  });
  report('tun-forwarder', rows, {
    rounds: ROUNDS,
    seconds: SECONDS,
    pings: PINGS,
    tunMtu: 1400,
    vethMtu: 1500,
    vethRttMedianMs: Number(median([...samples.values()].flat().map((run) => run.underlayRttMs)).toFixed(3)),
  });
});
