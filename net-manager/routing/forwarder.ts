import { monotonicMs } from '../../shared/monotonic-clock.js';
import { OVERLAY_MESSAGE } from '../../shared/overlay-wire.js';
import type { PeerRoute, Peers } from '../secure/peers.js';
import type { TunDevice } from '../tun.js';
import { PROMOTED, SEALED_HEADER, SEALED_HEADROOM, SEALED_TAG, type UdpEndpoint } from '../tunnel.js';
import type { FastPath } from './fast-path.js';
import { type Sender, SourceCheck } from './source-check.js';
import type { TranslateResult, Translator } from './translator.js';

/**
 * Room for one packet of a batch: the TUN's MTU is at most 1500, so every IP packet fits, with the bytes before
 * it (28: the header, and the relay's) and after it (16: the tag) that sealing it for an encrypted peer takes.
 */
export const SLOT_BYTES = 2048;
/** Packets from the TUN start this far into the buffer: the first one also has room for its header. */
const HEADROOM = SEALED_HEADROOM;
/** Packets handled per read: one `recvmmsg`/`sendmmsg` and one pass of JavaScript over a shared buffer. */
export const BATCH = 64;
/** How long a packet waits for the cluster manager to resolve its destination (then it is dropped). */
export const QUERY_TIMEOUT_MS = 5000;
/** Unresolved destinations held at once; beyond it the first packet to a new one is dropped. */
const MAX_WAITING = 1024;

export interface ForwarderCounters {
  fromTun: number;
  fromPeers: number;
  sendFailed: number;
  tunWriteFailed: number;
  held: number;
  heldDropped: number;
  /** Tunnel packets from endpoints no cached table names, held until the cluster manager says who sent them. */
  strangersHeld: number;
  /** Tunnel packets from endpoints that are no known worker's: dropped (a stranger, or spoofing). */
  strangersDropped: number;
  /** Encrypted: packets from a worker with the source address of an instance that runs elsewhere: dropped. */
  spoofedSource: number;
  /** Encrypted: sources asked about again because the cached answer disagreed with the sender and was old. */
  sourceRechecks: number;
  /** Encrypted: packets for a worker that announced no key: dropped. */
  noPeerKey: number;
  /** Encrypted: packets kept until their peer's handshake is done. */
  staged: number;
}

interface Waiting {
  since: number;
  packet: Buffer;
}

/** A tunnel packet from an endpoint not known yet, waiting for the table of its source instance. */
interface Arrival extends Waiting {
  peerIp: number;
  peerPort: number;
  /** Encrypted: the worker it authenticated as (else null: the endpoint is what is checked). */
  nodeId: string | null;
}

export interface ForwarderOptions {
  tun: TunDevice;
  udp: UdpEndpoint;
  translator: Translator;
  /** Ask the cluster manager which job owns `ip` (the answer comes back through the translator's route cache). */
  query: (ip: number) => void;
  /** Encrypted: an answer from the cluster manager's rendezvous port (type 6), as the addon handed it up. */
  onRendezvousAnswer?: (buffer: Buffer, offset: number, length: number) => void;
  /** Polling the TUN or the UDP socket failed (the fd went bad): the data plane has stopped. */
  onError: (error: Error) => void;
  now?: () => number;
}

/**
 * The data plane's I/O loop: drains the TUN and the UDP socket in batches on Node's own event loop, has the
 * translator rewrite each packet in place, and sends what goes to peers with one `sendmmsg` per batch. A packet
 * whose destination is not known yet waits (one per destination) for the cluster manager's answer.
 *
 * Encrypted (`setPeers`): the addon opens what arrives and seals what leaves (native/secure.h); handshake messages
 * go to the peers (secure/peers.ts), packets for a peer without a session wait there for its handshake, and an
 * arriving packet is taken only if its source instance runs on the worker it authenticated as.
 */
export class Forwarder {
  readonly counters: ForwarderCounters = {
    fromTun: 0,
    fromPeers: 0,
    sendFailed: 0,
    tunWriteFailed: 0,
    held: 0,
    heldDropped: 0,
    strangersHeld: 0,
    strangersDropped: 0,
    spoofedSource: 0,
    sourceRechecks: 0,
    noPeerKey: 0,
    staged: 0,
  };
  private readonly tun: TunDevice;
  private readonly udp: UdpEndpoint;
  private readonly translator: Translator;
  private readonly query: (ip: number) => void;
  private readonly onError: (error: Error) => void;
  private readonly onRendezvousAnswer: ForwarderOptions['onRendezvousAnswer'];
  private readonly now: () => number;
  private readonly tunBuffer = Buffer.alloc(HEADROOM + SLOT_BYTES * BATCH);
  /** The TUN reads into this view: packet i lands at HEADROOM + i * SLOT_BYTES of tunBuffer. */
  private readonly tunSlots = this.tunBuffer.subarray(HEADROOM);
  private readonly tunLengths = new Int32Array(BATCH);
  private readonly peerBuffer = Buffer.alloc(SLOT_BYTES * BATCH);
  private readonly peerLengths = new Int32Array(BATCH);
  private readonly peerAddresses = new Uint32Array(BATCH);
  private readonly peerPorts = new Uint16Array(BATCH);
  private readonly peerSlots = new Int32Array(BATCH);
  private readonly sendPeers = new Int32Array(BATCH);
  private readonly sendOffsets = new Int32Array(BATCH);
  private readonly sendLengths = new Int32Array(BATCH);
  private readonly sendAddresses = new Uint32Array(BATCH);
  private readonly sendPorts = new Uint16Array(BATCH);
  /** Packets of the current batch that go into the TUN, written with one addon call (so they can be coalesced). */
  private readonly writeOffsets = new Int32Array(BATCH);
  private readonly writeLengths = new Int32Array(BATCH);
  private writes = 0;
  /** The first packet to each destination being resolved, by destination. */
  private readonly waiting = new Map<number, Waiting>();
  /** The first packet from each source instance whose worker is not known yet, by source. */
  private readonly arrivals = new Map<number, Arrival>();
  /** Encrypted: whether a packet's source runs on the worker it authenticated as. */
  private readonly sources: SourceCheck;
  /** The encrypted overlay's peers; null while it is unencrypted. */
  private peers: Peers | null = null;
  /** The peers' clock, read once per batch (not per packet) by whatever sends. */
  private peerClock = 0;
  /** Where decided flows are installed, so that their later packets never come here; null: none. */
  private fastPath: FastPath | null = null;

  constructor(options: ForwarderOptions) {
    this.tun = options.tun;
    this.udp = options.udp;
    this.translator = options.translator;
    this.query = options.query;
    this.onError = options.onError;
    this.onRendezvousAnswer = options.onRendezvousAnswer;
    this.now = options.now ?? monotonicMs;
    this.sources = new SourceCheck(this.translator.routes, this.query, this.counters);
  }

  /** Encrypted from now on (the UDP endpoint's `secure(true)` is the caller's), or unencrypted with null. */
  setPeers(peers: Peers | null): void {
    this.peers = peers;
  }

  /** Installs the flows it decides in `fastPath` from now on (null: no more). */
  setFastPath(fastPath: FastPath | null): void {
    this.fastPath = fastPath;
  }

  start(): void {
    this.tun.onReadable((error) => (error ? this.onError(error) : this.drainTun()));
    this.udp.onReadable((error) => (error ? this.onError(error) : this.drainPeers()));
  }

  /** Packets the local containers sent: to peers, back into the TUN, or held until their route is known. */
  drainTun(): void {
    const buffer = this.tunBuffer;
    const now = this.now();
    if (this.peers) this.peerClock = this.peers.clock();
    for (;;) {
      const count = this.tun.readBatch(this.tunSlots, SLOT_BYTES, this.tunLengths);
      if (count === 0) return;
      this.counters.fromTun += count;
      let sends = 0;
      for (let i = 0; i < count; i++) {
        const offset = HEADROOM + i * SLOT_BYTES;
        const length = this.tunLengths[i]!;
        const result = this.translator.translateOutgoing(buffer, offset, length, now);
        if (
          this.settleOutgoing(result, buffer, offset, length, now) &&
          this.routeSend(sends, buffer, offset, length, result)
        ) {
          sends++;
        }
      }
      if (sends > 0) this.send(buffer, sends);
      this.flushWrites(buffer);
      // A short batch means the device is empty (and nothing of a super-packet is left in the addon).
      if (count < BATCH) return;
    }
  }

  /** Packets from peer workers: translated for the local containers and written into the TUN. */
  drainPeers(): void {
    if (this.peers) {
      this.drainSealed(this.peers);
      return;
    }
    const buffer = this.peerBuffer;
    const now = this.now();
    for (;;) {
      const count = this.udp.recvBatch(
        buffer,
        SLOT_BYTES,
        this.peerLengths,
        this.peerAddresses,
        this.peerPorts,
      );
      if (count === 0) return;
      this.counters.fromPeers += count;
      const routes = this.translator.routes;
      for (let i = 0; i < count; i++) {
        const offset = i * SLOT_BYTES;
        const length = this.peerLengths[i]!;
        if (!routes.isPeer(this.peerAddresses[i]!, this.peerPorts[i]!)) {
          this.holdArrival(buffer, offset, length, this.peerAddresses[i]!, this.peerPorts[i]!, null, now);
          continue;
        }
        const result = this.translator.translateArriving(buffer, offset, length, now);
        if (result.action === 'deliver') {
          this.queueWrite(offset, length);
          if (result.flow.cacheable)
            this.fastPath?.installArriving(result.flow, -1, this.peerAddresses[i]!, this.peerPorts[i]!);
        }
        if (result.queryIp !== 0) this.query(result.queryIp);
      }
      this.flushWrites(buffer);
      if (count < BATCH) return;
    }
  }

  /**
   * Encrypted: datagrams opened by the addon (strangers, replays and forgeries are dropped there). Handshake
   * messages go to the peers; a packet is delivered when its source instance runs on the worker it came from.
   */
  private drainSealed(peers: Peers): void {
    const buffer = this.peerBuffer;
    const now = this.now();
    for (;;) {
      const count = this.udp.recvOpen(
        buffer,
        SLOT_BYTES,
        this.peerLengths,
        this.peerAddresses,
        this.peerPorts,
        this.peerSlots,
      );
      if (count === 0) return;
      this.counters.fromPeers += count;
      for (let i = 0; i < count; i++) {
        const tag = this.peerSlots[i]!;
        const length = this.peerLengths[i]!;
        if (tag === -1) {
          const offset = i * SLOT_BYTES;
          if (buffer[offset] === OVERLAY_MESSAGE.probeAnswer)
            this.onRendezvousAnswer?.(buffer, offset, length);
          else peers.onHandshake(buffer, offset, length, this.peerAddresses[i]!, this.peerPorts[i]!);
          continue;
        }
        const slot = tag & ~PROMOTED;
        if ((tag & PROMOTED) !== 0) peers.promoted(slot);
        const peer = peers.atSlot(slot);
        if (length === 0 || !peer) continue;
        const offset = i * SLOT_BYTES + SEALED_HEADER;
        const sender = this.sentBy(buffer, offset, length, peer.nodeId, now);
        if (sender === 'no') continue;
        if (sender === 'unknown') {
          this.holdArrival(
            buffer,
            offset,
            length,
            this.peerAddresses[i]!,
            this.peerPorts[i]!,
            peer.nodeId,
            now,
          );
          continue;
        }
        const result = this.translator.translateArriving(buffer, offset, length, now);
        if (result.action === 'deliver') {
          this.queueWrite(offset, length);
          if (result.flow.cacheable) this.fastPath?.installArriving(result.flow, slot, 0, 0);
        }
        if (result.queryIp !== 0) this.query(result.queryIp);
      }
      this.flushWrites(buffer);
      if (count < BATCH) return;
    }
  }

  /**
   * Encrypted: whether the packet's source instance runs on `nodeId` (the worker it authenticated as): `no` is
   * counted as spoofing; `unknown` until the source's table is here, or while an old answer that disagrees is
   * checked again with the cluster manager.
   */
  private sentBy(buffer: Buffer, offset: number, length: number, nodeId: string, now: number): Sender {
    if (length < 20) return 'yes'; // malformed: the translator drops and counts it
    return this.sources.sentBy(buffer.readUInt32BE(offset + 12), nodeId, now);
  }

  /** Route tables arrived: the packets waiting for addresses now known (or known to be missing) go on. */
  retryWaiting(now = this.now()): void {
    if (this.peers) this.peerClock = this.peers.clock();
    this.retryArrivals(now);
    for (const [ip, waiting] of this.waiting) {
      const known = this.translator.routes.lookup(ip, now);
      if (known?.kind === 'pending') continue;
      this.waiting.delete(ip);
      const { packet, since } = waiting;
      const length = packet.length - HEADROOM - SEALED_TAG;
      const result = this.translator.translateOutgoing(packet, HEADROOM, length, now);
      // A `query` again: the earlier one went unanswered and its mark expired; it is asked again and waits on.
      if (
        this.settleOutgoing(result, packet, HEADROOM, length, since) &&
        this.routeSend(0, packet, HEADROOM, length, result)
      ) {
        this.send(packet, 1);
      }
      this.flushWrites(packet);
    }
  }

  /** Packets that waited longer than the query timeout are dropped. */
  expireWaiting(now = this.now()): void {
    for (const [ip, waiting] of this.waiting) {
      if (now - waiting.since < QUERY_TIMEOUT_MS) continue;
      this.waiting.delete(ip);
      this.counters.heldDropped++;
    }
    for (const [ip, arrival] of this.arrivals) {
      if (now - arrival.since < QUERY_TIMEOUT_MS) continue;
      this.arrivals.delete(ip);
      this.counters.strangersDropped++;
    }
    this.sources.expire(now, QUERY_TIMEOUT_MS);
  }

  /**
   * A tunnel packet from an endpoint no cached table names. Its source instance's table tells where that
   * instance runs: if it is not known yet, the packet waits for it (the first packet of a worker this one never
   * talked to), as it does while an old answer that disagrees is checked again; if it is known (or no job owns
   * the address), the sender is not that worker: dropped.
   */
  private holdArrival(
    buffer: Buffer,
    offset: number,
    length: number,
    peerIp: number,
    peerPort: number,
    nodeId: string | null,
    now: number,
  ): void {
    const source = length >= 20 ? buffer.readUInt32BE(offset + 12) : 0;
    const known = source === 0 ? undefined : this.translator.routes.lookup(source, now);
    const resolving = known === undefined || known.kind === 'pending' || this.sources.checking(source);
    if (source === 0 || !resolving || this.arrivals.has(source)) {
      this.counters.strangersDropped++;
      return;
    }
    if (this.arrivals.size >= MAX_WAITING) {
      this.counters.strangersDropped++;
      return;
    }
    this.arrivals.set(source, {
      since: now,
      packet: Buffer.from(buffer.subarray(offset, offset + length)),
      peerIp,
      peerPort,
      nodeId,
    });
    this.counters.strangersHeld++;
    if (!known) {
      this.translator.routes.markPending(source, now);
      this.query(source);
    }
  }

  /** Held arrivals whose source is resolved now: delivered if they came from its worker, else dropped. */
  private retryArrivals(now: number): void {
    for (const [ip, arrival] of this.arrivals) {
      if (this.translator.routes.lookup(ip, now)?.kind === 'pending') continue;
      const { packet } = arrival;
      const sender =
        arrival.nodeId === null
          ? this.translator.routes.isPeer(arrival.peerIp, arrival.peerPort)
            ? 'yes'
            : 'no'
          : this.sentBy(packet, 0, packet.length, arrival.nodeId, now);
      if (sender === 'unknown') continue;
      this.arrivals.delete(ip);
      if (sender === 'no') {
        this.counters.strangersDropped++;
        continue;
      }
      const result = this.translator.translateArriving(packet, 0, packet.length, now);
      if (result.action === 'deliver') this.queueWrite(0, packet.length);
      if (result.queryIp !== 0) this.query(result.queryIp);
      this.flushWrites(packet);
    }
  }

  get waitingCount(): number {
    return this.waiting.size;
  }

  /**
   * Acts on a translated outgoing packet: queued for the TUN (the caller flushes the writes), held for its
   * route, or dropped. True when it goes to a peer (the caller queues the send). Asks for an address the
   * translation found unknown.
   */
  private settleOutgoing(
    result: TranslateResult,
    buffer: Buffer,
    offset: number,
    length: number,
    since: number,
  ): boolean {
    if (result.queryIp !== 0) this.query(result.queryIp);
    switch (result.action) {
      case 'send':
        return true;
      case 'local':
        this.queueWrite(offset, length);
        return false;
      case 'query':
        this.hold(result.queryIp, buffer, offset, length, since);
        return false;
      default:
        return false;
    }
  }

  /**
   * Queues a translated packet as send `index` of the batch: to the peer's endpoint; encrypted, for its peer's
   * session, or staged with the peer until its handshake is done. False when nothing was queued.
   */
  private routeSend(
    index: number,
    buffer: Buffer,
    offset: number,
    length: number,
    result: TranslateResult,
  ): boolean {
    const peers = this.peers;
    if (peers) {
      const route = result.route!;
      const peer = route.publicKey === null ? null : peers.forRoute(route as PeerRoute);
      if (!peer) {
        this.counters.noPeerKey++;
        return false;
      }
      const clock = this.peerClock;
      peer.lastUsed = clock;
      if (!peers.canSeal(peer, clock)) {
        peers.stage(peer, buffer, offset, length, clock);
        this.counters.staged++;
        return false;
      }
      this.sendPeers[index] = peer.slot;
      if (result.flow.cacheable) this.fastPath?.installOutgoing(result.flow, peer.slot, 0, 0);
    } else if (result.flow.cacheable) {
      this.fastPath?.installOutgoing(result.flow, -1, result.peerIp, result.peerPort);
    }
    this.sendOffsets[index] = offset;
    this.sendLengths[index] = length;
    this.sendAddresses[index] = result.peerIp;
    this.sendPorts[index] = result.peerPort;
    return true;
  }

  private hold(ip: number, buffer: Buffer, offset: number, length: number, since: number): void {
    if (this.waiting.has(ip) || this.waiting.size >= MAX_WAITING) {
      this.counters.heldDropped++;
      return;
    }
    // A copy (the batch buffer is reused by the next read), with room to seal it.
    const packet = Buffer.alloc(HEADROOM + length + SEALED_TAG);
    buffer.copy(packet, HEADROOM, offset, offset + length);
    this.waiting.set(ip, { since, packet });
    this.counters.held++;
  }

  private send(buffer: Buffer, count: number): void {
    if (this.peers) {
      const sealed = this.udp.sendSealed(buffer, this.sendOffsets, this.sendLengths, this.sendPeers, count);
      if (sealed < count) this.counters.sendFailed += count - sealed;
      return;
    }
    const sent = this.udp.sendBatch(
      buffer,
      this.sendOffsets,
      this.sendLengths,
      this.sendAddresses,
      this.sendPorts,
      count,
    );
    if (sent < count) this.counters.sendFailed += count - sent;
  }

  private queueWrite(offset: number, length: number): void {
    this.writeOffsets[this.writes] = offset;
    this.writeLengths[this.writes] = length;
    this.writes++;
  }

  private flushWrites(buffer: Buffer): void {
    if (this.writes === 0) return;
    const written = this.tun.writeBatch(buffer, this.writeOffsets, this.writeLengths, this.writes);
    this.counters.tunWriteFailed += this.writes - written;
    this.writes = 0;
  }
}
