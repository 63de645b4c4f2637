/**
 * The TUN addon with real devices in real network namespaces. A TUN device lives in the namespace of the process
 * that opens it, so TUN cases run small child scripts under `ip netns exec nmtun-t-...`; the children import
 * `net-manager/tun.ts` and `net-manager/tunnel.ts` themselves (through a loader hook that strips the types with
 * vite's oxc transform, which vitest ships), so they exercise the same wrappers and addon path as the program.
 * The UDP cases that need no namespace run in this process.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TunDevice, type TunStats, type UdpStats } from '../../net-manager/tun.js';
import { UdpEndpoint } from '../../net-manager/tunnel.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = join(import.meta.dirname, '..', '..');
const TUN_URL = pathToFileURL(join(ROOT, 'net-manager', 'tun.ts')).href;
const TUNNEL_URL = pathToFileURL(join(ROOT, 'net-manager', 'tunnel.ts')).href;
const ROUTING_URL = (name: string) => pathToFileURL(join(ROOT, 'net-manager', 'routing', `${name}.ts`)).href;
const VITE_URL = pathToFileURL(createRequire(import.meta.url).resolve('vite')).href;

/** Every namespace this file creates; leftovers of a crashed run are removed before and after. */
const NS_PREFIX = 'nmtun-t-';
const NS = {
  icmp: `${NS_PREFIX}icmp`,
  args: `${NS_PREFIX}args`,
  a: `${NS_PREFIX}a`,
  b: `${NS_PREFIX}b`,
  exit: `${NS_PREFIX}exit`,
  deleted: `${NS_PREFIX}deleted`,
  throws: `${NS_PREFIX}throws`,
  fuzz: `${NS_PREFIX}fuzz`,
  fast: `${NS_PREFIX}fast`,
} as const;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function removeNamespaces(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(NS_PREFIX)) {
      try {
        ip('netns', 'delete', name);
      } catch {
        // already gone
      }
    }
  }
}

function addNamespace(name: string): void {
  ip('netns', 'add', name);
  ip('-n', name, 'link', 'set', 'dev', 'lo', 'up');
}

// ---- child scripts ----

/** Strips TypeScript types on import, so that a plain `node` child can import the project's .ts sources. */
const HOOKS = `
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
const { transformWithOxc } = await import(${JSON.stringify(VITE_URL)});
export async function resolve(specifier, context, nextResolve) {
  if (specifier.startsWith('.') && specifier.endsWith('.js') && context.parentURL?.endsWith('.ts')) {
    try {
      return await nextResolve(specifier, context);
    } catch {
      return nextResolve(specifier.slice(0, -3) + '.ts', context);
    }
  }
  return nextResolve(specifier, context);
}
export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
  const path = fileURLToPath(url);
  const { code } = await transformWithOxc(await readFile(path, 'utf8'), path, { lang: 'ts' });
  return { format: 'module', source: code, shortCircuit: true };
}
`;
const REGISTER = `import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n`;

/** Shared by the child scripts: reports as JSON lines, `ip`, IPv4 + ICMP by hand. */
const PRELUDE = `
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { TunDevice } from ${JSON.stringify(TUN_URL)};
import { UdpEndpoint } from ${JSON.stringify(TUNNEL_URL)};
const report = (message) => process.stdout.write(JSON.stringify(message) + '\\n');
const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const ipNumber = (text) => text.split('.').reduce((value, part) => value * 256 + Number(part), 0);
const ipText = (value) => [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
/** Brings a TUN up with an address (IPv6 off: no router solicitations in the way). */
function configure(tun, cidr, mtu = 1500) {
  try { writeFileSync('/proc/sys/net/ipv6/conf/' + tun.name + '/disable_ipv6', '1'); } catch {}
  ip('addr', 'add', cidr, 'dev', tun.name);
  ip('link', 'set', 'dev', tun.name, 'mtu', String(mtu), 'up');
}
function checksum(bytes, start, end) {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (bytes[i] << 8) + (i + 1 < end ? bytes[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}
function echoRequest(source, destination, id, sequence, payload) {
  const packet = Buffer.alloc(28 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(0x1234, 4);
  packet[8] = 64;
  packet[9] = 1;
  packet.writeUInt32BE(ipNumber(source), 12);
  packet.writeUInt32BE(ipNumber(destination), 16);
  packet.writeUInt16BE(checksum(packet, 0, 20), 10);
  packet[20] = 8;
  packet.writeUInt16BE(id, 24);
  packet.writeUInt16BE(sequence, 26);
  payload.copy(packet, 28);
  packet.writeUInt16BE(checksum(packet, 20, packet.length), 22);
  return packet;
}
function parseIcmp(bytes, offset, length) {
  const packet = bytes.subarray(offset, offset + length);
  if (length < 28 || packet[0] >> 4 !== 4 || packet[9] !== 1) return undefined;
  const headerLength = (packet[0] & 15) * 4;
  return {
    length,
    source: ipText(packet.readUInt32BE(12)),
    destination: ipText(packet.readUInt32BE(16)),
    ipChecksumOk: checksum(packet, 0, headerLength) === 0,
    icmpChecksumOk: checksum(packet, headerLength, length) === 0,
    type: packet[headerLength],
    code: packet[headerLength + 1],
    id: packet.readUInt16BE(headerLength + 4),
    sequence: packet.readUInt16BE(headerLength + 6),
    payload: packet.subarray(headerLength + 8).toString('hex'),
  };
}
`;

/**
 * (1) An echo request written to the TUN, from a peer address in its subnet to its own address: the kernel's
 * reply comes back through onReadable + readBatch. A first, large request's reply does not fit the 512-byte
 * slots and is dropped and counted. The child closes the device and then has to exit on its own.
 */
const ICMP_CHILD = `${PRELUDE}
const SLOT = 512;
const BATCH = 16;
const tun = TunDevice.open('nmtun%d');
configure(tun, '10.77.0.1/24');
const buffer = Buffer.alloc(SLOT * BATCH);
const lengths = new Int32Array(BATCH);
const seen = [];
const small = Buffer.from('edge-tun echo payload 0123456789abcdef');
tun.onReadable((error) => {
  if (error) return report({ error: error.message });
  let count;
  while ((count = tun.readBatch(buffer, SLOT, lengths)) > 0) {
    for (let i = 0; i < count; i++) {
      const icmp = parseIcmp(buffer, i * SLOT, lengths[i]);
      if (!icmp) continue;
      seen.push(icmp);
      if (icmp.type === 0 && icmp.sequence === 2) {
        report({ reply: icmp, expected: small.toString('hex'), stats: tun.stats(), name: tun.name });
        tun.close();
        return;
      }
    }
  }
});
const large = echoRequest('10.77.0.2', '10.77.0.1', 0x4242, 1, Buffer.alloc(1000, 7));
report({ wroteLarge: tun.write(large, 0, large.length) });
setTimeout(() => {
  const request = echoRequest('10.77.0.2', '10.77.0.1', 0x4242, 2, small);
  // At an offset inside a bigger buffer, as the data plane writes.
  const framed = Buffer.concat([Buffer.alloc(10), request, Buffer.alloc(5)]);
  report({ wrote: tun.write(framed, 10, request.length) });
}, 200);
setTimeout(() => { report({ timeout: true, seen, stats: tun.stats() }); process.exit(3); }, 5000).unref();
`;

/**
 * (2) One side of a TUN <-> UDP forwarder: whatever the TUN hands over goes to the peer's UDP port in batches,
 * whatever arrives on the UDP port goes into the TUN. argv: tunCidr localAddress peerAddress [offload] [batch]
 * [rounds]. With offload ('1') the TUN hands TCP super-packets to the addon, which cuts them into segments; the
 * UDP socket sends runs of them with GSO and takes them coalesced (GRO); segments written back are glued into
 * super-packets. The wire and the slots carry the same MTU-sized packets either way.
 */
const FORWARDER_CHILD = `${PRELUDE}
const [tunCidr, localAddress, peerAddress, offload = '0', batchText = '64', roundsText = 'Infinity'] = process.argv.slice(2);
const PORT = 50103;
const OFFLOAD = offload === '1';
const BATCH = Number(batchText);
const ROUNDS = Number(roundsText);
const SLOT = 2048;
const tun = TunDevice.open('nmtun0', { offload: OFFLOAD });
configure(tun, tunCidr, 1400);
const udp = UdpEndpoint.bind(localAddress, PORT, { offload: OFFLOAD });
const fromTun = { buffer: Buffer.alloc(SLOT * BATCH), lengths: new Int32Array(BATCH), offsets: new Int32Array(BATCH) };
const fromUdp = { buffer: Buffer.alloc(SLOT * BATCH), lengths: new Int32Array(BATCH), offsets: new Int32Array(BATCH) };
for (let i = 0; i < BATCH; i++) fromTun.offsets[i] = fromUdp.offsets[i] = i * SLOT;
const peers = new Uint32Array(BATCH).fill(ipNumber(peerAddress));
const peerPorts = new Uint16Array(BATCH).fill(PORT);
const senders = new Uint32Array(BATCH);
const senderPorts = new Uint16Array(BATCH);
const counts = { tunRead: 0, udpSent: 0, udpReceived: 0, tunWritten: 0, tunWakeups: 0, udpWakeups: 0, largest: 0 };
// A few full batches per wakeup, then back to the loop (uv_poll is level-triggered: the rest comes next turn).
tun.onReadable(() => {
  counts.tunWakeups++;
  for (let round = 0; round < ROUNDS; round++) {
    const count = tun.readBatch(fromTun.buffer, SLOT, fromTun.lengths);
    if (count === 0) break;
    counts.tunRead += count;
    for (let i = 0; i < count; i++) if (fromTun.lengths[i] > counts.largest) counts.largest = fromTun.lengths[i];
    counts.udpSent += udp.sendBatch(fromTun.buffer, fromTun.offsets, fromTun.lengths, peers, peerPorts, count);
    if (count < BATCH) break;
  }
});
udp.onReadable(() => {
  counts.udpWakeups++;
  for (let round = 0; round < ROUNDS; round++) {
    const count = udp.recvBatch(fromUdp.buffer, SLOT, fromUdp.lengths, senders, senderPorts);
    if (count === 0) break;
    counts.udpReceived += count;
    counts.tunWritten += tun.writeBatch(fromUdp.buffer, fromUdp.offsets, fromUdp.lengths, count);
    if (count < BATCH) break;
  }
});
process.on('SIGTERM', () => {
  report({ stopped: true, counts, tun: tun.stats(), udp: udp.stats() });
  tun.close();
  udp.close();
});
report({ ready: true, name: tun.name, port: udp.port, offload: tun.offload && udp.offload });
`;

/**
 * The data plane as the net manager runs it (forwarder, translator, route cache and, with argv[2] '1', the fast
 * path), unencrypted, with a TUN whose own address plays the local container (namespace IP 10.81.0.1, instance
 * IP 10.82.0.1). Two peer workers A and B are UDP sockets here that answer every UDP packet as the remote
 * container would (source its instance IP, destination this namespace IP), marking the answer with their name.
 * The job `j` (service IP 10.82.0.100) has one instance, 10.82.0.2, which runs on A, then moves to B, then is
 * deleted, while one socket keeps a flow to it going. Reports what reached whom at every step.
 */
const FAST_PATH_CHILD = `${PRELUDE}
import { createSocket } from 'node:dgram';
import { Forwarder } from ${JSON.stringify(ROUTING_URL('forwarder'))};
import { Translator } from ${JSON.stringify(ROUTING_URL('translator'))};
import { RouteCache } from ${JSON.stringify(ROUTING_URL('route-cache'))};
import { FastPath } from ${JSON.stringify(ROUTING_URL('fast-path'))};
const FAST = process.argv[2] === '1';
const tun = TunDevice.open('nmfast0', { offload: true });
configure(tun, '10.81.0.1/24', 1400);
ip('route', 'add', '10.82.0.0/16', 'dev', tun.name);
const udp = UdpEndpoint.bind('127.0.0.1', 0, { offload: true });
const routes = new RouteCache({ localNodeId: 'here' });
const translator = new Translator({ routes });
const queries = [];
const forwarder = new Forwarder({ tun, udp, translator, query: (ip) => queries.push(ipText(ip)), onError: (error) => report({ error: error.message }) });
const fastPath = FAST ? new FastPath(tun, udp, translator) : null;
forwarder.setFastPath(fastPath);
forwarder.start();
translator.attach(ipNumber('10.81.0.1'), ipNumber('10.82.0.1'));
// Bad arguments: clear errors, and the fast path goes on.
const refusals = [];
const attempt = (call) => {
  try {
    call();
    refusals.push(null);
  } catch (error) {
    refusals.push(error.constructor.name + ': ' + error.message);
  }
};
const spareTun = TunDevice.open('nmfast1');
const spareUdp = UdpEndpoint.bind('127.0.0.1', 0);
attempt(() => spareTun.linkFastPath({ not: 'a udp endpoint' }));
attempt(() => spareTun.linkFastPath(null).installFlow(0, 17, 1, 2, 3, 4, 5, 6, -1, 7, 8, 0, 0, 0));
const spare = spareTun.linkFastPath(spareUdp.native, 16);
attempt(() => spare.installFlow(0, 17, 1, 2, 3, 4, 5, 6, -2, 7, 8, 0, 0, 0));
attempt(() => spare.installFlow(0, 17, 1, 2, 3, 4, 5, 6, -1, 7, 8, 1, 3, 0));
refusals.push(spare.fastPathStats().flows, spare.forgetAddress(3), spare.fastPathStats().flows);
spareUdp.close();
refusals.push(spare.fastPathStats());
spareTun.close();

function udpPacket(source, destination, sourcePort, destinationPort, payload) {
  const packet = Buffer.alloc(28 + payload.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.writeUInt32BE(source, 12);
  packet.writeUInt32BE(destination, 16);
  packet.writeUInt16BE(checksum(packet, 0, 20), 10);
  packet.writeUInt16BE(sourcePort, 20);
  packet.writeUInt16BE(destinationPort, 22);
  packet.writeUInt16BE(8 + payload.length, 24);
  payload.copy(packet, 28);
  return packet;
}
/** A peer worker: what reached it (checked: a valid IP header), and an answer for each UDP packet. */
function peer(name, instanceIp) {
  const socket = createSocket('udp4');
  const peer = { name, socket, got: [] };
  socket.on('message', (packet) => {
    const valid = checksum(packet, 0, 20) === 0;
    const source = packet.readUInt32BE(12);
    const destination = packet.readUInt32BE(16);
    const sourcePort = packet.readUInt16BE(20);
    const destinationPort = packet.readUInt16BE(22);
    const payload = packet.subarray(28).toString();
    peer.got.push({ source: ipText(source), destination: ipText(destination), valid, payload });
    // As the remote translator would: from the instance IP to the sender's namespace IP (its route says which).
    const answer = udpPacket(ipNumber(instanceIp), ipNumber('10.81.0.1'), destinationPort, sourcePort, Buffer.from(payload + ' from ' + name));
    socket.send(answer, udp.port, '127.0.0.1');
  });
  return new Promise((resolve) => socket.bind(0, '127.0.0.1', () => resolve(peer)));
}
const a = await peer('A', '10.82.0.2');
const b = await peer('B', '10.82.0.2');
function table(on) {
  return {
    jobId: 'j', jobName: 'j', serviceIp: '10.82.0.100',
    instances: [{ number: 0, instanceIp: '10.82.0.2', route: on && {
      nodeId: on.name, namespaceIp: on === a ? '10.83.1.2' : '10.83.2.2', publicIp: '127.0.0.1', udpPort: on.socket.address().port,
    } }],
  };
}
// The local container's sockets: one flow to the instance IP, one to the service IP.
const answers = [];
async function socket() {
  const socket = createSocket('udp4');
  await new Promise((resolve) => socket.bind(0, '10.81.0.1', resolve));
  socket.on('message', (message, from) => answers.push({ text: message.toString(), from: from.address }));
  return socket;
}
const client = await socket();
const serviceClient = await socket();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Sends n datagrams to address:7000, one every 5 ms, then waits a little for the answers. */
async function flow(address, n, tag) {
  const from = address === '10.82.0.100' ? serviceClient : client;
  for (let i = 0; i < n; i++) {
    from.send(tag + ' ' + i, 7000, address);
    await sleep(5);
  }
  await sleep(150);
}
function step(name) {
  const got = { step: name, answers: answers.splice(0), a: a.got.splice(0), b: b.got.splice(0), queries: queries.splice(0) };
  got.fast = fastPath?.stats() ?? null;
  got.counters = { ...translator.counters, ...forwarder.counters };
  return got;
}
const steps = [];
routes.apply(table(a));
await flow('10.82.0.2', 40, 'first');
await flow('10.82.0.100', 40, 'service');
steps.push(step('on A'));
routes.apply(table(b));
await flow('10.82.0.2', 40, 'moved');
await flow('10.82.0.100', 40, 'service moved');
steps.push(step('moved to B'));
// A, where the instance ran before, answers as if it still did: nothing of it is taken.
for (let i = 0; i < 20; i++) a.socket.send(udpPacket(ipNumber('10.82.0.2'), ipNumber('10.81.0.1'), 7000, client.address().port, Buffer.from('stale ' + i)), udp.port, '127.0.0.1');
await sleep(150);
steps.push(step('stale answers from A'));
routes.remove('j');
await flow('10.82.0.2', 20, 'deleted');
for (let i = 0; i < 20; i++) b.socket.send(udpPacket(ipNumber('10.82.0.2'), ipNumber('10.81.0.1'), 7000, client.address().port, Buffer.from('after delete ' + i)), udp.port, '127.0.0.1');
await sleep(150);
steps.push(step('deleted'));
report({ steps, refusals });
fastPath?.close();
tun.close();
udp.close();
client.close();
serviceClient.close();
a.socket.close();
b.socket.close();
`;

/** A TCP sink: reports the byte count and SHA-256 of one connection. argv: address port. */
const TCP_SERVER_CHILD = `
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
const [address, port] = process.argv.slice(2);
const server = createServer((socket) => {
  const hash = createHash('sha256');
  let bytes = 0;
  socket.on('data', (chunk) => { bytes += chunk.length; hash.update(chunk); });
  socket.on('end', () => {
    process.stdout.write(JSON.stringify({ received: bytes, sha256: hash.digest('hex') }) + '\\n');
    socket.end();
    server.close();
  });
});
server.listen(Number(port), address, () => process.stdout.write(JSON.stringify({ listening: true }) + '\\n'));
`;

/** A TCP source: sends `megabytes` MiB of random bytes and reports their SHA-256. argv: address port megabytes. */
const TCP_CLIENT_CHILD = `
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
const [address, port, megabytes] = process.argv.slice(2);
const hash = createHash('sha256');
let left = Number(megabytes);
const started = performance.now();
const socket = connect(Number(port), address, () => {
  const more = () => {
    while (left > 0) {
      const chunk = randomBytes(1 << 20);
      hash.update(chunk);
      left--;
      if (!socket.write(chunk)) return socket.once('drain', more);
    }
    socket.end();
  };
  more();
});
socket.resume();
socket.on('close', () => {
  const ms = performance.now() - started;
  process.stdout.write(JSON.stringify({ sent: Number(megabytes) << 20, sha256: hash.digest('hex'), ms }) + '\\n');
});
`;

/** (4) Bad arguments to a real TUN device: each throws (or returns false) and the process lives on. */
const ARGS_CHILD = `${PRELUDE}
const tun = TunDevice.open('nmtun0');
configure(tun, '10.76.0.1/24');
const results = {};
const attempt = (name, call) => {
  try {
    results[name] = { returned: call() };
  } catch (error) {
    results[name] = { threw: error.constructor.name, message: error.message, code: error.code };
  }
};
const buffer = Buffer.alloc(4096);
const lengths = new Int32Array(4);
attempt('readBatch: array for lengths', () => tun.readBatch(buffer, 1024, [0, 0, 0, 0]));
attempt('readBatch: Uint32Array for lengths', () => tun.readBatch(buffer, 1024, new Uint32Array(4)));
attempt('readBatch: string for buffer', () => tun.readBatch('x'.repeat(4096), 1024, lengths));
attempt('readBatch: slot 0', () => tun.readBatch(buffer, 0, lengths));
attempt('readBatch: slot 1.5', () => tun.readBatch(buffer, 1.5, lengths));
attempt('readBatch: slot NaN', () => tun.readBatch(buffer, Number.NaN, lengths));
attempt('readBatch: slots do not fit', () => tun.readBatch(buffer, 1025, lengths));
attempt('readBatch: nothing waiting', () => tun.readBatch(buffer, 1024, lengths));
attempt('write: offset past the end', () => tun.write(buffer, 4000, 200));
attempt('write: negative offset', () => tun.write(buffer, -1, 20));
attempt('write: negative length', () => tun.write(buffer, 0, -20));
attempt('write: length 2**40', () => tun.write(buffer, 0, 2 ** 40));
attempt('write: Float64Array', () => tun.write(new Float64Array(100), 0, 20));
attempt('write: garbage packet', () => tun.write(Buffer.from([0xff, 1, 2, 3]), 0, 4));
attempt('write: empty packet', () => tun.write(buffer, 0, 0));
attempt('writeBatch: count past the arrays', () => tun.writeBatch(buffer, new Int32Array(2), new Int32Array(2), 3));
attempt('writeBatch: a range out of bounds', () =>
  tun.writeBatch(buffer, Int32Array.of(0, 4090), Int32Array.of(20, 20), 2));
attempt('onReadable: not a function', () => tun.onReadable('nope'));
attempt('open: name too long', () => TunDevice.open('nmtun-name-much-too-long'));
attempt('open: bad name', () => TunDevice.open('bad/name'));
const stats = tun.stats();
tun.close();
tun.close();
attempt('readBatch after close', () => tun.readBatch(buffer, 1024, lengths));
attempt('write after close', () => tun.write(buffer, 0, 20));
report({ results, stats, alive: true });
`;

/**
 * (4b) An offloading TUN fed batches a hostile peer could send: runs of TCP segments (most glue into
 * super-packets), random bytes, bit flips in the headers. Every batch returns a count, the kernel's answers
 * (RSTs) are read back through the segmenting path, and the process lives on.
 */
const OFFLOAD_FUZZ_CHILD = `${PRELUDE}
const tun = TunDevice.open('nmtun0', { offload: true });
configure(tun, '10.75.0.1/24', 1400);
const SLOT = 2048;
const BATCH = 64;
const out = Buffer.alloc(SLOT * BATCH);
const offsets = Int32Array.from({ length: BATCH }, (_, i) => i * SLOT);
const lengths = new Int32Array(BATCH);
const readBuffer = Buffer.alloc(SLOT * BATCH);
const readLengths = new Int32Array(BATCH);
let seed = 12345;
const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
function tcpSegment(seq, payloadLength, flags) {
  const packet = Buffer.alloc(40 + payloadLength);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet.writeUInt16BE(0x4000, 6);
  packet[8] = 64;
  packet[9] = 6;
  packet.writeUInt32BE(ipNumber('10.75.0.2'), 12);
  packet.writeUInt32BE(ipNumber('10.75.0.1'), 16);
  packet.writeUInt16BE(checksum(packet, 0, 20), 10);
  packet.writeUInt16BE(40000, 20);
  packet.writeUInt16BE(9, 22);
  packet.writeUInt32BE(seq >>> 0, 24);
  packet.writeUInt32BE(1, 28);
  packet[32] = 0x50;
  packet[33] = flags;
  packet.writeUInt16BE(65535, 34);
  for (let i = 40; i < packet.length; i++) packet[i] = i & 255;
  const pseudo = Buffer.alloc(12 + packet.length - 20);
  packet.copy(pseudo, 0, 12, 20);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(packet.length - 20, 10);
  packet.copy(pseudo, 12, 20);
  packet.writeUInt16BE(checksum(pseudo, 0, pseudo.length), 36);
  return packet;
}
let offered = 0;
let written = 0;
const bad = [];
for (let round = 0; round < 300; round++) {
  const count = 1 + Math.floor(random() * BATCH);
  let seq = Math.floor(random() * 2 ** 32);
  for (let i = 0; i < count; i++) {
    let packet;
    if (random() < 0.7) {
      const size = random() < 0.8 ? 1000 : Math.floor(random() * 1000);
      packet = tcpSegment(seq, size, random() < 0.1 ? 0x18 : 0x10);
      seq += size;
    } else {
      packet = Buffer.from(Array.from({ length: Math.floor(random() * 1400) }, () => Math.floor(random() * 256)));
    }
    if (random() < 0.2 && packet.length > 0) packet[Math.floor(random() * Math.min(packet.length, 60))] ^= 1 << Math.floor(random() * 8);
    packet.copy(out, i * SLOT);
    lengths[i] = packet.length;
  }
  const took = tun.writeBatch(out, offsets, lengths, count);
  if (!(took >= 0 && took <= count)) bad.push({ took, count });
  offered += count;
  written += took;
  while (tun.readBatch(readBuffer, SLOT, readLengths) === BATCH);
}
await new Promise((resolve) => setTimeout(resolve, 200));
while (tun.readBatch(readBuffer, SLOT, readLengths) === BATCH);
report({ results: true, offered, written, bad, stats: tun.stats(), alive: true });
tun.close();
`;

/**
 * (5) A process polling a TUN and a UDP endpoint, with traffic flowing, exits on its own once its SIGTERM handler
 * closes them. Also used with the TUN deleted under the poll (by the test): the callback gets one Error.
 */
const EXIT_CHILD = `${PRELUDE}
const tun = TunDevice.open('nmtun0');
configure(tun, '10.75.0.1/24');
const udp = UdpEndpoint.bind('127.0.0.1', 0);
const buffer = Buffer.alloc(2048 * 8);
const lengths = new Int32Array(8);
const addresses = new Uint32Array(8);
const ports = new Uint16Array(8);
const calls = { tun: 0, tunErrors: [], udp: 0 };
tun.onReadable((error) => {
  calls.tun++;
  if (error) {
    calls.tunErrors.push({ message: error.message, code: error.code });
    report({ pollError: error.message, code: error.code });
    return;
  }
  while (tun.readBatch(buffer, 2048, lengths) > 0);
});
udp.onReadable(() => {
  calls.udp++;
  while (udp.recvBatch(buffer, 2048, lengths, addresses, ports) > 0);
});
process.on('SIGTERM', () => {
  tun.close();
  udp.close();
  report({ closed: true, calls, tun: tun.stats() });
});
// Some traffic on both, so the handles have been active.
const request = echoRequest('10.75.0.2', '10.75.0.1', 7, 1, Buffer.from('hello'));
tun.write(request, 0, request.length);
const sender = UdpEndpoint.bind('127.0.0.1', 0);
sender.sendBatch(Buffer.from('ping'), Int32Array.of(0), Int32Array.of(4), Uint32Array.of(0x7f000001), Uint16Array.of(udp.port), 1);
sender.close();
report({ ready: true, name: tun.name });
`;

/**
 * An exception thrown by a readable callback is an ordinary uncaught exception: with a handler the process goes
 * on (and exits cleanly after close), without one it exits with code 1 and the stack, as Node does for any
 * event-loop callback. argv: 'handled' | 'unhandled'.
 */
const THROW_CHILD = `${PRELUDE}
const udp = UdpEndpoint.bind('127.0.0.1', 0);
let calls = 0;
if (process.argv[2] === 'handled')
  process.on('uncaughtException', (error) => {
    report({ caught: error.message, calls });
    udp.close();
  });
udp.onReadable(() => {
  calls++;
  throw new Error('thrown from onReadable');
});
const sender = UdpEndpoint.bind('127.0.0.1', 0);
sender.sendBatch(Buffer.from('x'), Int32Array.of(0), Int32Array.of(1), Uint32Array.of(0x7f000001), Uint16Array.of(udp.port), 1);
sender.close();
`;

// ---- running children ----

type Message = Record<string, unknown>;

class Child {
  readonly messages: Message[] = [];
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly process: ChildProcess;
  private buffered = '';

  constructor(namespace: string, script: string, args: string[] = []) {
    this.process = spawn(
      'ip',
      ['netns', 'exec', namespace, process.execPath, '--import', join(dir, 'register.mjs'), script, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.process.stdout!.on('data', (chunk: Buffer) => {
      this.output += chunk;
      this.buffered += chunk;
      let newline = this.buffered.indexOf('\n');
      while (newline >= 0) {
        const line = this.buffered.slice(0, newline);
        this.buffered = this.buffered.slice(newline + 1);
        try {
          this.messages.push(JSON.parse(line) as Message);
        } catch {
          // not a report
        }
        newline = this.buffered.indexOf('\n');
      }
    });
    this.process.stderr!.on('data', (chunk: Buffer) => {
      this.output += chunk;
    });
    this.exited = new Promise((resolve) =>
      this.process.once('exit', (code, signal) => resolve({ code, signal })),
    );
    children.push(this);
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** The first report with `key`. */
  message(key: string, timeoutMs = 10_000): Promise<Message> {
    return waitFor(
      () => {
        const found = this.messages.find((message) => key in message);
        if (!found && !this.running) throw new Error(`child exited:\n${this.output}`);
        return found;
      },
      `a child report with "${key}" (output so far:\n${this.output})`,
      timeoutMs,
      20,
    );
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.process.kill(signal);
  }

  /** Waits for the exit; SIGKILL after `timeoutMs`. */
  async exit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const started = performance.now();
    const timer = setTimeout(() => this.signal('SIGKILL'), timeoutMs);
    const result = await this.exited;
    clearTimeout(timer);
    return { ...result, ms: performance.now() - started };
  }
}

let dir = '';
const children: Child[] = [];
const endpoints: UdpEndpoint[] = [];

function script(name: string, source: string): string {
  const path = join(dir, name);
  writeFileSync(path, source);
  return path;
}

function ping(namespace: string, target: string, args: string[]): { transmitted: number; received: number } {
  let output: string;
  try {
    output = execFileSync('ip', ['netns', 'exec', namespace, 'ping', '-n', ...args, target], {
      encoding: 'utf8',
      timeout: 30_000,
    });
  } catch (error) {
    output = String((error as { stdout?: string }).stdout ?? error);
  }
  const match = /(\d+) packets transmitted, (\d+) received/.exec(output);
  if (!match) throw new Error(`unexpected ping output: ${output}`);
  return { transmitted: Number(match[1]), received: Number(match[2]) };
}

beforeAll(() => {
  removeNamespaces();
  dir = mkdtempSync(join(tmpdir(), 'nmtun-test-'));
  writeFileSync(join(dir, 'hooks.mjs'), HOOKS);
  writeFileSync(join(dir, 'register.mjs'), REGISTER);
});

afterEach(async () => {
  for (const child of children.splice(0)) {
    child.signal('SIGKILL');
    await child.exited;
  }
  for (const endpoint of endpoints.splice(0)) endpoint.close();
});

afterAll(() => {
  removeNamespaces();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('TunDevice in a network namespace', () => {
  it('reads the kernel echo reply to a hand-made echo request, drops what does not fit a slot', async () => {
    addNamespace(NS.icmp);
    const child = new Child(NS.icmp, script('icmp.mjs', ICMP_CHILD));
    const report = (await child.message('reply')) as {
      reply: Record<string, unknown>;
      expected: string;
      stats: { oversized: number; writeErrors: number };
      name: string;
    };
    expect(child.messages.find((message) => 'wroteLarge' in message)).toEqual({ wroteLarge: true });
    expect(child.messages.find((message) => 'wrote' in message)).toEqual({ wrote: true });
    expect(report.name).toMatch(/^nmtun\d+$/);
    expect(report.reply).toMatchObject({
      source: '10.77.0.1',
      destination: '10.77.0.2',
      type: 0,
      code: 0,
      id: 0x4242,
      sequence: 2,
      ipChecksumOk: true,
      icmpChecksumOk: true,
      payload: report.expected,
      length: 28 + report.expected.length / 2,
    });
    // The reply to the 1028-byte request did not fit a 512-byte slot.
    expect(report.stats).toMatchObject({ oversized: 1, writeErrors: 0 });
    // It closed the device and nothing else keeps it alive.
    expect(await child.exit(5000)).toMatchObject({ code: 0 });
  });

  it('throws on bad arguments, refuses bad packets with false, and lives on', async () => {
    addNamespace(NS.args);
    const child = new Child(NS.args, script('args.mjs', ARGS_CHILD));
    const report = (await child.message('results')) as {
      results: Record<string, { threw?: string; message?: string; code?: string; returned?: unknown }>;
      stats: { writeErrors: number; oversized: number };
      alive: boolean;
    };
    const { results } = report;
    for (const name of [
      'readBatch: array for lengths',
      'readBatch: Uint32Array for lengths',
      'readBatch: string for buffer',
      'write: Float64Array',
      'onReadable: not a function',
    ])
      expect(results[name], name).toMatchObject({ threw: 'TypeError' });
    for (const name of [
      'readBatch: slot 0',
      'readBatch: slot 1.5',
      'readBatch: slot NaN',
      'readBatch: slots do not fit',
      'write: offset past the end',
      'write: negative offset',
      'write: negative length',
      'write: length 2**40',
      'writeBatch: count past the arrays',
      'writeBatch: a range out of bounds',
      'open: name too long',
    ])
      expect(results[name], name).toMatchObject({ threw: 'RangeError' });
    expect(results['open: bad name']).toMatchObject({ threw: 'Error', code: 'EINVAL' });
    expect(results['open: bad name']?.message).toMatch(
      /cannot create TUN device 'bad\/name'.*Invalid argument/,
    );
    expect(results['readBatch: nothing waiting']).toEqual({ returned: 0 });
    expect(results['write: garbage packet']).toEqual({ returned: false });
    expect(results['write: empty packet']).toEqual({ returned: false });
    expect(report.stats.writeErrors).toBe(2);
    expect(results['readBatch after close']).toMatchObject({
      threw: 'Error',
      message: 'TUN device is closed',
    });
    expect(results['write after close']).toMatchObject({ threw: 'Error', message: 'TUN device is closed' });
    expect(report.alive).toBe(true);
    expect(await child.exit(5000)).toMatchObject({ code: 0 });
  });

  it('takes whatever batch a peer could send with offloads on, glues what fits, and lives on', async () => {
    addNamespace(NS.fuzz);
    const child = new Child(NS.fuzz, script('offload-fuzz.mjs', OFFLOAD_FUZZ_CHILD));
    const report = (await child.message('results', 30_000)) as {
      offered: number;
      written: number;
      bad: unknown[];
      stats: TunStats;
      alive: boolean;
    };
    expect(report.bad).toEqual([]);
    expect(report.alive).toBe(true);
    expect(report.written).toBeGreaterThan(report.offered / 2);
    expect(report.stats.superPacketsWritten).toBeGreaterThan(100);
    expect(report.stats.segmentsGlued).toBeGreaterThan(report.stats.superPacketsWritten);
    expect(await child.exit(5000)).toMatchObject({ code: 0 });
  });

  it('lets a polling process exit on its own once SIGTERM closes its TUN and UDP endpoint', async () => {
    addNamespace(NS.exit);
    const exitScript = script('exit.mjs', EXIT_CHILD);
    const child = new Child(NS.exit, exitScript);
    await child.message('ready');
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.signal('SIGTERM');
    const closed = (await child.message('closed')) as { calls: { tun: number; udp: number } };
    expect(closed.calls.tun).toBeGreaterThanOrEqual(1);
    expect(closed.calls.udp).toBeGreaterThanOrEqual(1);
    const result = await child.exit(5000);
    expect(result).toMatchObject({ code: 0, signal: null });
    expect(result.ms).toBeLessThan(2000);
  });

  it('reports a device deleted under the poll once, stops polling, and still exits cleanly', async () => {
    addNamespace(NS.deleted);
    const child = new Child(NS.deleted, script('exit.mjs', EXIT_CHILD));
    await child.message('ready');
    ip('-n', NS.deleted, 'link', 'delete', 'dev', 'nmtun0');
    expect(await child.message('pollError')).toMatchObject({ code: 'EBADF' });
    // Give a spinning poll the chance to show itself.
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.signal('SIGTERM');
    const closed = (await child.message('closed')) as {
      calls: { tun: number; tunErrors: unknown[] };
      tun: { pollErrors: number };
    };
    expect(closed.calls.tunErrors).toHaveLength(1);
    expect(closed.calls.tun).toBeLessThan(10);
    expect(closed.tun.pollErrors).toBe(1);
    expect(await child.exit(5000)).toMatchObject({ code: 0, signal: null });
  });
  it('turns an exception thrown by a readable callback into an ordinary uncaught exception', async () => {
    addNamespace(NS.throws);
    const throwScript = script('throw.mjs', THROW_CHILD);
    const handled = new Child(NS.throws, throwScript, ['handled']);
    expect(await handled.message('caught')).toEqual({ caught: 'thrown from onReadable', calls: 1 });
    expect(await handled.exit(5000)).toMatchObject({ code: 0, signal: null });
    const unhandled = new Child(NS.throws, throwScript, ['unhandled']);
    expect(await unhandled.exit(5000)).toMatchObject({ code: 1, signal: null });
    expect(unhandled.output).toContain('Error: thrown from onReadable');
  });
});

describe('TUN -> UDP -> TUN forwarders between two namespaces joined by a veth pair', () => {
  type Stopped = { counts: Record<string, number>; tun: TunStats; udp: UdpStats };

  beforeAll(() => {
    addNamespace(NS.a);
    addNamespace(NS.b);
    ip('-n', NS.a, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth0', 'netns', NS.b);
    ip('-n', NS.a, 'addr', 'add', '10.78.0.1/24', 'dev', 'veth0');
    ip('-n', NS.b, 'addr', 'add', '10.78.0.2/24', 'dev', 'veth0');
    ip('-n', NS.a, 'link', 'set', 'dev', 'veth0', 'up');
    ip('-n', NS.b, 'link', 'set', 'dev', 'veth0', 'up');
  });

  /** Forwarders on both sides: TUN 10.79.0.1 in a, 10.79.0.2 in b, UDP between the veth addresses. */
  async function forwarders(offloadA: boolean, offloadB = offloadA): Promise<[Child, Child]> {
    const forwarder = script('forwarder.mjs', FORWARDER_CHILD);
    const flag = (offload: boolean) => (offload ? '1' : '0');
    const a = new Child(NS.a, forwarder, ['10.79.0.1/24', '10.78.0.1', '10.78.0.2', flag(offloadA)]);
    const b = new Child(NS.b, forwarder, ['10.79.0.2/24', '10.78.0.2', '10.78.0.1', flag(offloadB)]);
    const ready = { ready: true, name: 'nmtun0', port: 50103 };
    expect(await a.message('ready')).toEqual({ ...ready, offload: offloadA });
    expect(await b.message('ready')).toEqual({ ...ready, offload: offloadB });
    return [a, b];
  }

  async function stop(child: Child): Promise<Stopped> {
    child.signal('SIGTERM');
    const stopped = (await child.message('stopped')) as Stopped;
    expect(await child.exit(3000)).toMatchObject({ code: 0 });
    return stopped;
  }

  it.each([false, true])('carries real ping both ways (offload: %s)', async (offload) => {
    const [a, b] = await forwarders(offload);
    expect(ping(NS.a, '10.79.0.2', ['-c', '3', '-i', '0.2', '-W', '2'])).toEqual({
      transmitted: 3,
      received: 3,
    });
    expect(ping(NS.b, '10.79.0.1', ['-c', '3', '-i', '0.2', '-W', '2'])).toEqual({
      transmitted: 3,
      received: 3,
    });
    // Full-size packets (1372 + 28 = the TUN MTU of 1400).
    expect(ping(NS.a, '10.79.0.2', ['-c', '3', '-i', '0.2', '-W', '2', '-s', '1372', '-M', 'do'])).toEqual({
      transmitted: 3,
      received: 3,
    });
    // A quick burst, several packets in flight at once.
    const burst = ping(NS.b, '10.79.0.1', ['-c', '300', '-i', '0.002', '-l', '16', '-W', '2']);
    expect(burst.received).toBeGreaterThanOrEqual(285);

    const stoppedA = await stop(a);
    await stop(b);
    // a read its own 9 requests and the replies to b's 303, and received the other way round.
    expect(stoppedA.counts.tunRead).toBeGreaterThanOrEqual(290);
    expect(stoppedA.counts.udpReceived).toBeGreaterThanOrEqual(290);
    expect(stoppedA.counts.largest).toBe(1400);
    expect(stoppedA.tun).toMatchObject({ oversized: 0, writeErrors: 0 });
    expect(stoppedA.udp).toMatchObject({ truncated: 0, sendErrors: 0 });
  });

  it.each([
    { offloadA: false, offloadB: false, what: 'one packet per datagram' },
    { offloadA: true, offloadB: true, what: 'offload: super-packets cut, GSO/GRO, segments glued' },
    { offloadA: true, offloadB: false, what: 'offload on the sending side only' },
    { offloadA: false, offloadB: true, what: 'offload on the receiving side only' },
  ])('carries 32 MiB of TCP intact ($what)', async ({ offloadA, offloadB }) => {
    const [a, b] = await forwarders(offloadA, offloadB);
    const server = new Child(NS.b, script('tcp-server.mjs', TCP_SERVER_CHILD), ['10.79.0.2', '5201']);
    await server.message('listening');
    const client = new Child(NS.a, script('tcp-client.mjs', TCP_CLIENT_CHILD), ['10.79.0.2', '5201', '32']);
    const sent = (await client.message('sent', 45_000)) as { sent: number; sha256: string };
    const received = (await server.message('received', 10_000)) as { received: number; sha256: string };
    expect(received).toEqual({ received: sent.sent, sha256: sent.sha256 });

    const stoppedA = await stop(a);
    const stoppedB = await stop(b);
    expect(stoppedA.tun).toMatchObject({ oversized: 0, writeErrors: 0 });
    expect(stoppedB.tun).toMatchObject({ oversized: 0, writeErrors: 0 });
    expect(stoppedA.udp).toMatchObject({ truncated: 0 });
    expect(stoppedB.udp).toMatchObject({ truncated: 0 });
    expect(stoppedA.tun.offloadDropped).toBe(0);
    expect(stoppedB.tun.offloadDropped).toBe(0);
    // JavaScript only ever sees packets of at most the MTU, whatever moved underneath.
    expect(stoppedA.counts.largest).toBeLessThanOrEqual(1400);
    if (offloadA) {
      // The sender's kernel handed over super-packets, cut here and sent as GSO runs.
      expect(stoppedA.tun.superPacketsRead).toBeGreaterThan(100);
      expect(stoppedA.tun.segmentsCut).toBeGreaterThan(stoppedA.tun.superPacketsRead);
      expect(stoppedA.udp.gsoSends).toBeGreaterThan(100);
    } else {
      expect(stoppedA.tun.superPacketsRead).toBe(0);
    }
    if (offloadB) {
      // The receiver took coalesced datagrams only if the sender sent runs; it glued segments either way.
      if (offloadA) expect(stoppedB.udp.groReceives).toBeGreaterThan(100);
      expect(stoppedB.tun.superPacketsWritten).toBeGreaterThan(100);
      expect(stoppedB.tun.segmentsGlued).toBeGreaterThan(stoppedB.tun.superPacketsWritten);
    } else {
      expect(stoppedB.tun.superPacketsWritten).toBe(0);
    }
  });
});

describe('the fast path under route changes (forwarder, translator, route cache and addon in a namespace)', () => {
  interface Step {
    step: string;
    answers: { text: string; from: string }[];
    a: { source: string; destination: string; valid: boolean; payload: string }[];
    b: Step['a'];
    queries: string[];
    fast: { hitsOut: number; hitsIn: number; forgotten: number; flows: number } | null;
    counters: Record<string, number>;
  }

  beforeAll(() => addNamespace(NS.fast));

  it.each([true, false])(
    'follows a move under running flows and delivers nothing after a delete (fast path: %s)',
    async (fast) => {
      const child = new Child(NS.fast, script('fast-path.mjs', FAST_PATH_CHILD), [fast ? '1' : '0']);
      const { steps, refusals } = (await child.message('steps', 20_000)) as unknown as {
        steps: Step[];
        refusals: unknown[];
      };
      expect(refusals).toEqual([
        'TypeError: linkFastPath takes a Udp endpoint (or null)',
        'Error: the fast path is not linked (call linkFastPath)',
        'RangeError: slot must be an integer from -1 to 1048575',
        null,
        1,
        1,
        0,
        // closing the UDP endpoint unlinks the fast path
        null,
      ]);
      expect(await child.exit(5000)).toMatchObject({ code: 0 });
      const [onA, moved, stale, deleted] = steps as [Step, Step, Step, Step];
      const from = (step: Step, peer: 'A' | 'B', tag: string) =>
        step.answers.filter(({ text }) => text.startsWith(`${tag} `) && text.endsWith(` from ${peer}`));

      // On A: both flows reach it, rewritten (its namespace IP, from this container's instance IP), and every
      // answer comes back; the service flow's answers come from the service IP.
      expect(onA.a).toHaveLength(80);
      expect(
        onA.a.every(
          ({ source, destination, valid }) => valid && source === '10.82.0.1' && destination === '10.83.1.2',
        ),
      ).toBe(true);
      expect(from(onA, 'A', 'first')).toHaveLength(40);
      expect(from(onA, 'A', 'service')).toHaveLength(40);
      expect(from(onA, 'A', 'service').every(({ from }) => from === '10.82.0.100')).toBe(true);
      expect(from(onA, 'A', 'first').every(({ from }) => from === '10.82.0.2')).toBe(true);

      // Moved to B: every later packet of both running flows goes to B, none to A.
      expect(moved.a).toEqual([]);
      expect(moved.b).toHaveLength(80);
      expect(moved.b.every(({ destination, valid }) => valid && destination === '10.83.2.2')).toBe(true);
      expect(from(moved, 'B', 'moved')).toHaveLength(40);
      expect(from(moved, 'B', 'service moved')).toHaveLength(40);
      expect(from(moved, 'B', 'service moved').every(({ from }) => from === '10.82.0.100')).toBe(true);
      expect(from(moved, 'B', 'moved').every(({ from }) => from === '10.82.0.2')).toBe(true);

      // A answering for the instance that left it: nothing delivered.
      expect(stale.answers).toEqual([]);

      // Deleted: nothing sent to either, nothing delivered from B; the address is asked about again.
      expect(deleted.a).toEqual([]);
      expect(deleted.b).toEqual([]);
      expect(deleted.answers).toEqual([]);
      expect(deleted.queries).toContain('10.82.0.2');

      if (fast) {
        // The later packets of each flow went through the fast path, both ways, and each change forgot flows.
        expect(onA.fast!.hitsOut).toBeGreaterThanOrEqual(70);
        expect(onA.fast!.hitsIn).toBeGreaterThanOrEqual(70);
        expect(moved.fast!.hitsOut - onA.fast!.hitsOut).toBeGreaterThanOrEqual(70);
        expect(moved.fast!.hitsIn - onA.fast!.hitsIn).toBeGreaterThanOrEqual(70);
        expect(moved.fast!.forgotten).toBeGreaterThan(onA.fast!.forgotten);
        expect(deleted.fast!.forgotten).toBeGreaterThan(stale.fast!.forgotten);
        expect(deleted.fast!.hitsOut).toBe(stale.fast!.hitsOut);
        expect(deleted.fast!.hitsIn).toBe(stale.fast!.hitsIn);
      } else {
        expect(onA.fast).toBeNull();
        expect(onA.counters.sent).toBe(80);
      }
    },
  );
});

describe('UdpEndpoint on loopback (in this process)', () => {
  function bind(address = '127.0.0.1', port = 0): UdpEndpoint {
    const endpoint = UdpEndpoint.bind(address, port);
    endpoints.push(endpoint);
    return endpoint;
  }

  it('sends 100 datagrams with one sendBatch and receives them all with recvBatch', async () => {
    const sender = bind();
    const receiver = bind();
    expect(sender.port).toBeGreaterThan(0);
    const COUNT = 100;
    const payloads = Array.from({ length: COUNT }, (_, i) =>
      Buffer.from(
        `${'#'.repeat(i * 13)}datagram ${i}|`.padEnd(20 + i * 7, String.fromCharCode(65 + (i % 26))),
      ),
    );
    // Packed back to back at odd offsets in one buffer.
    const buffer = Buffer.alloc(payloads.reduce((sum, payload) => sum + payload.length, 3));
    const offsets = new Int32Array(COUNT);
    const lengths = new Int32Array(COUNT);
    let at = 3;
    payloads.forEach((payload, i) => {
      payload.copy(buffer, at);
      offsets[i] = at;
      lengths[i] = payload.length;
      at += payload.length;
    });
    const addresses = new Uint32Array(COUNT).fill(0x7f000001);
    const ports = new Uint16Array(COUNT).fill(receiver.port);
    expect(sender.sendBatch(buffer, offsets, lengths, addresses, ports, COUNT)).toBe(COUNT);

    const SLOT = 4096;
    const BATCH = 32;
    const slots = Buffer.alloc(SLOT * BATCH);
    const got = {
      lengths: new Int32Array(BATCH),
      addresses: new Uint32Array(BATCH),
      ports: new Uint16Array(BATCH),
    };
    const received: { payload: Buffer; address: number; port: number }[] = [];
    const batches: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${received.length} datagrams arrived`)), 5000);
      receiver.onReadable(() => {
        for (;;) {
          const count = receiver.recvBatch(slots, SLOT, got.lengths, got.addresses, got.ports);
          if (count === 0) break;
          batches.push(count);
          for (let i = 0; i < count; i++)
            received.push({
              payload: Buffer.from(slots.subarray(i * SLOT, i * SLOT + got.lengths[i]!)),
              address: got.addresses[i]!,
              port: got.ports[i]!,
            });
        }
        if (received.length >= COUNT) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(received).toHaveLength(COUNT);
    received.forEach((datagram, i) => {
      expect(datagram.payload.equals(payloads[i]!), `datagram ${i}`).toBe(true);
      expect(datagram.address).toBe(0x7f000001);
      expect(datagram.port).toBe(sender.port);
    });
    expect(Math.max(...batches)).toBe(BATCH);
    expect(sender.stats()).toMatchObject({ sendErrors: 0 });
    expect(receiver.stats()).toMatchObject({ truncated: 0 });
    expect(receiver.recvBatch(slots, SLOT, got.lengths, got.addresses, got.ports)).toBe(0);
  });

  it('drops and counts datagrams that do not fit a slot and datagrams the kernel refuses', async () => {
    const sender = bind();
    const receiver = bind();
    const buffer = Buffer.alloc(3000, 0x61);
    buffer.write('small one', 2000);
    const sent = sender.sendBatch(
      buffer,
      Int32Array.of(0, 0, 2000),
      Int32Array.of(1500, 100, 9),
      Uint32Array.of(0x7f000001, 0x7f000001, 0x7f000001),
      // Port 0 is refused by the kernel (EINVAL): dropped, counted, the batch goes on.
      Uint16Array.of(receiver.port, 0, receiver.port),
      3,
    );
    expect(sent).toBe(2);
    expect(sender.stats()).toMatchObject({ sendErrors: 1 });
    const slots = Buffer.alloc(1024 * 4);
    const lengths = new Int32Array(4);
    const addresses = new Uint32Array(4);
    const ports = new Uint16Array(4);
    const count = await waitFor(
      () => receiver.recvBatch(slots, 1024, lengths, addresses, ports) || undefined,
      'the small datagram',
      5000,
      10,
    );
    expect(count).toBe(1);
    expect(slots.subarray(0, lengths[0]).toString()).toBe('small one');
    expect(receiver.stats()).toMatchObject({ truncated: 1 });
  });

  it('throws TypeError/RangeError for bad arguments, clear errors for bad binds, and keeps working', () => {
    const endpoint = bind();
    const buffer = Buffer.alloc(4096);
    const lengths = new Int32Array(4);
    const addresses = new Uint32Array(4);
    const ports = new Uint16Array(4);
    const offsets = new Int32Array(4);
    const any = <T>(value: unknown) => value as T;

    expect(() => endpoint.recvBatch(buffer, 1024, any<Int32Array>([0, 0]), addresses, ports)).toThrow(
      TypeError,
    );
    expect(() =>
      endpoint.recvBatch(buffer, 1024, lengths, any<Uint32Array>(new Int32Array(4)), ports),
    ).toThrow(/addresses must be a Uint32Array/);
    expect(() =>
      endpoint.recvBatch(buffer, 1024, lengths, addresses, any<Uint16Array>(new Uint8Array(4))),
    ).toThrow(TypeError);
    expect(() => endpoint.recvBatch(any<Buffer>('buffer'), 1024, lengths, addresses, ports)).toThrow(
      TypeError,
    );
    expect(() => endpoint.recvBatch(buffer, 1025, lengths, addresses, ports)).toThrow(RangeError);
    expect(() => endpoint.recvBatch(buffer, -1, lengths, addresses, ports)).toThrow(RangeError);
    expect(() => endpoint.recvBatch(buffer, 1024, lengths, new Uint32Array(2), ports)).toThrow(RangeError);
    expect(() => endpoint.recvBatch(buffer, any<number>('1024'), lengths, addresses, ports)).toThrow(
      TypeError,
    );

    const send =
      (off: number[], len: number[], count = off.length) =>
      () =>
        endpoint.sendBatch(buffer, Int32Array.from(off), Int32Array.from(len), addresses, ports, count);
    expect(send([4000], [200])).toThrow(RangeError);
    expect(send([-1], [10])).toThrow(RangeError);
    expect(send([0], [-10])).toThrow(RangeError);
    expect(send([2 ** 31 - 1], [2 ** 31 - 1])).toThrow(RangeError);
    expect(send([0, 0], [10, 10], 3)).toThrow(RangeError);
    expect(send([0], [10], -1)).toThrow(RangeError);
    expect(send([0], [10], 0.5)).toThrow(RangeError);
    expect(() => endpoint.sendBatch(buffer, offsets, lengths, addresses, any<Uint16Array>([1]), 1)).toThrow(
      TypeError,
    );
    // Nothing was sent by the rejected calls.
    expect(endpoint.stats()).toMatchObject({ sendErrors: 0 });
    expect(() => endpoint.onReadable(any<() => void>(42))).toThrow(TypeError);

    expect(() => UdpEndpoint.bind('not an address', 0)).toThrow(TypeError);
    expect(() => UdpEndpoint.bind('127.0.0.1', 70_000)).toThrow(RangeError);
    let inUse: unknown;
    try {
      bind('127.0.0.1', endpoint.port);
    } catch (error) {
      inUse = error;
    }
    expect(inUse).toBeInstanceOf(Error);
    expect(inUse).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    expect((inUse as Error).message).toMatch(/cannot bind UDP 127\.0\.0\.1:\d+: Address already in use/);

    // Still works after all that; closed is closed, twice over.
    expect(endpoint.recvBatch(buffer, 1024, lengths, addresses, ports)).toBe(0);
    endpoint.close();
    endpoint.close();
    expect(() => endpoint.recvBatch(buffer, 1024, lengths, addresses, ports)).toThrow(
      'UDP endpoint is closed',
    );
    expect(() => TunDevice.open('x'.repeat(16))).toThrow(RangeError);
  });
});
