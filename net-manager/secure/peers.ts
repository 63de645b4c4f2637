import { randomInt } from 'node:crypto';
import { numberToIp } from '../../shared/ipv4.js';
import type { Logger } from '../../shared/logger.js';
import { monotonicMs } from '../../shared/monotonic-clock.js';
import { OVERLAY_MESSAGE, relayId } from '../../shared/overlay-wire.js';
import { RELAY_HEADER, SEALED_HEADROOM, SEALED_TAG, type UdpEndpoint } from '../tunnel.js';
import {
  type Cipher,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  HandshakeError,
  INITIATION_BYTES,
  type InitiatorState,
  RESPONSE_BYTES,
  responseReceiver,
  type StaticKeys,
  TYPE_INITIATION,
  TYPE_RESPONSE,
} from './noise.js';

/**
 * The peers of the encrypted overlay and their sessions: who to handshake with, when, and what to do with the
 * packets that wait for it. WireGuard's timers are the model:
 * - a packet for a peer without a session is staged (up to STAGED_MAX) and a handshake starts; an unanswered
 *   initiation is sent again every RETRY_MS, and after GIVE_UP_MS the staged packets are dropped;
 * - the side that initiated a session starts a new one after `rekeyAfterMs` while the peer is in use, the other
 *   side a little later (so one of them does, not both); the addon refuses a session after 180 s anyway;
 * - a peer that sent something and got nothing back for KEEPALIVE_MS gets an empty packet (a keepalive), so both
 *   sides see the session working;
 * - peers idle for IDLE_MS are forgotten, keys included.
 * Keys never leave this file and the addon. A peer is known by its public key, which the cluster manager vouches
 * for (route tables, or an answer to a key query): a handshake from a key it does not vouch for goes nowhere.
 */

export const RETRY_MS = 5000;
export const GIVE_UP_MS = 90_000;
export const REKEY_AFTER_MS = 120_000;
/** The addon's limit (secure.h kRejectAfterMs): past it a session neither seals nor opens. */
export const REJECT_AFTER_MS = 180_000;
export const KEEPALIVE_MS = 10_000;
/** A peer in use hears from this side at least this often, so that NATs on the way keep its mapping. */
export const PERSISTENT_KEEPALIVE_MS = 25_000;
export const IDLE_MS = 10 * 60_000;
export const STAGED_MAX = 128;
/** While the relay carries a peer's packets, a direct path is tried this often. */
export const DIRECT_RETRY_MS = 30_000;
/** Handshake messages taken per second, all peers together (each costs two or three Diffie-Hellmans). */
const HANDSHAKES_PER_SECOND = 500;
/** Initiations from keys the cluster manager is being asked about, held at once. */
const MAX_HELD_INITIATIONS = 256;

export interface PeerCounters {
  handshakesInitiated: number;
  handshakesAnswered: number;
  handshakesCompleted: number;
  handshakesFailed: number;
  handshakesGivenUp: number;
  handshakesRateLimited: number;
  initiationsReplayed: number;
  unknownKeys: number;
  stagedDropped: number;
  keepalivesSent: number;
  /** Handshakes started because a peer in use stopped answering. */
  contactLost: number;
}

interface Session {
  localIndex: number;
  startedAt: number;
  initiator: boolean;
  cipher: Cipher;
}

export interface Peer {
  readonly slot: number;
  readonly nodeId: string;
  readonly publicKey: Buffer;
  readonly keyText: string;
  /** The endpoint and candidates the cluster manager last gave for it: set again only when they change. */
  announced: string;
  /** Where handshakes go besides the addon's endpoint: the candidates, as [ip, port]. */
  candidates: readonly (readonly [number, number])[];
  initiation: { state: InitiatorState; sentAt: number; firstAt: number } | null;
  current: Session | null;
  next: Session | null;
  /** The newest initiation timestamp taken from it: older ones are replays. */
  lastTimestamp: Buffer | null;
  lastHandshakeAt: number;
  /** When a direct path was last tried while the relay carried the peer's packets. */
  lastDirectTry: number;
  staged: Buffer[];
  lastUsed: number;
}

/** A peer as `GET /v1/status` shows it. */
export interface PeerView {
  nodeId: string;
  publicKey: string;
  endpoint: string;
  session: 'established' | 'handshaking' | 'none';
  /** Whether its packets go straight to its endpoint or through the cluster manager's relay. */
  via: 'direct' | 'relay';
  /** The data cipher of the session in use. */
  cipher: Cipher | null;
  lastHandshakeMsAgo: number | null;
  rxBytes: number;
  txBytes: number;
  roams: number;
}

/** What a peer is made from: a cached route (or a `peer` table) with the worker's key. */
export interface PeerRoute {
  nodeId: string;
  publicKey: string;
  publicIp: number;
  udpPort: number;
  candidates: readonly (readonly [number, number])[];
  endpointsKey: string;
}

export interface PeersOptions {
  udp: UdpEndpoint;
  keys: StaticKeys;
  /** A handshake came from a key no cached peer has: ask the cluster manager whose it is. */
  askKey: (keyText: string) => void;
  /** A handshake to a peer without a session starts: have the cluster manager tell it to reach out too. */
  askPunch?: (keyText: string) => void;
  logger: Logger;
  rekeyAfterMs?: number;
  /** Offer AES-256-GCM in handshakes (this CPU runs it fast); the session uses it when the peer can too. */
  offerAes?: boolean;
  now?: () => number;
}

export class Peers {
  readonly counters: PeerCounters = {
    handshakesInitiated: 0,
    handshakesAnswered: 0,
    handshakesCompleted: 0,
    handshakesFailed: 0,
    handshakesGivenUp: 0,
    handshakesRateLimited: 0,
    initiationsReplayed: 0,
    unknownKeys: 0,
    stagedDropped: 0,
    keepalivesSent: 0,
    contactLost: 0,
  };
  private readonly udp: UdpEndpoint;
  private readonly keys: StaticKeys;
  private readonly byKey = new Map<string, Peer>();
  private readonly bySlot: (Peer | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /** Initiations in flight, by the sender index they carry (the response names it). */
  private readonly initiations = new Map<number, Peer>();
  /** Initiations from keys being asked about, by key. */
  private readonly held = new Map<
    string,
    { message: Buffer; address: number; port: number; at: number; via: Via }
  >();
  /** The cluster manager's relay; null without one. */
  private relay: { ip: number; port: number } | null = null;
  private readonly rekeyAfterMs: number;
  private readonly now: () => number;
  private lastTimestamp = 0n;
  private budget = HANDSHAKES_PER_SECOND;
  private budgetSecond = 0;
  /** Scratch for sending one message: room for the header before and the tag after. */
  private readonly scratch = Buffer.alloc(SEALED_HEADROOM + SEALED_TAG);
  private readonly one = { offsets: new Int32Array(1), lengths: new Int32Array(1), peers: new Int32Array(1) };

  /** `onEstablished`: a session is ready for the peer (its staged packets went out already). */
  constructor(private readonly options: PeersOptions) {
    this.udp = options.udp;
    this.keys = options.keys;
    this.rekeyAfterMs = options.rekeyAfterMs ?? REKEY_AFTER_MS;
    this.now = options.now ?? monotonicMs;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** The clock the peers' timers run on (monotonic milliseconds). */
  clock(): number {
    return this.now();
  }

  /**
   * The peer with this key, made if new, its endpoint set in the addon when the cluster manager's changed.
   * Called per packet: one Map lookup and a string compare when nothing changed.
   */
  forRoute(route: PeerRoute): Peer | null {
    const { nodeId, publicKey: keyText, publicIp: endpointIp, udpPort: endpointPort } = route;
    let peer = this.byKey.get(keyText);
    const announced = route.endpointsKey;
    if (peer && peer.nodeId === nodeId) {
      if (peer.announced !== announced) {
        peer.announced = announced;
        peer.candidates = route.candidates;
        this.udp.setPeer(peer.slot, endpointIp, endpointPort);
      }
      return peer;
    }
    if (peer) this.remove(peer);
    const publicKey = Buffer.from(keyText, 'base64');
    if (publicKey.length !== 32) return null;
    const slot = this.freeSlots.pop() ?? this.bySlot.length;
    peer = {
      slot,
      nodeId,
      publicKey,
      keyText,
      announced,
      candidates: route.candidates,
      initiation: null,
      current: null,
      next: null,
      lastTimestamp: null,
      lastHandshakeAt: -1,
      lastDirectTry: this.now(),
      staged: [],
      lastUsed: this.now(),
    };
    this.bySlot[slot] = peer;
    this.byKey.set(keyText, peer);
    this.udp.setPeer(slot, endpointIp, endpointPort);
    if (this.relay) this.udp.setRelay(slot, this.relay.ip, this.relay.port, relayId(publicKey), false);
    const held = this.held.get(keyText);
    if (held) {
      this.held.delete(keyText);
      this.answerInitiation(held.message, held.address, held.port, this.now(), held.via);
    }
    return peer;
  }

  /** The cluster manager says no node has this key: initiations held for it are dropped. */
  unknownKey(keyText: string): void {
    if (this.held.delete(keyText)) this.counters.unknownKeys++;
  }

  atSlot(slot: number): Peer | undefined {
    return this.bySlot[slot];
  }

  /** Whether packets for the peer can be sealed now (else they are staged: see `stage`). */
  canSeal(peer: Peer, now: number): boolean {
    const current = peer.current;
    return current !== null && now - current.startedAt < REJECT_AFTER_MS - 1000;
  }

  /** Keeps a copy of a packet until the peer has a session, and starts a handshake. */
  stage(peer: Peer, buffer: Buffer, offset: number, length: number, now: number): void {
    const copy = Buffer.alloc(SEALED_HEADROOM + length + SEALED_TAG);
    buffer.copy(copy, SEALED_HEADROOM, offset, offset + length);
    if (peer.staged.length >= STAGED_MAX) {
      peer.staged.shift();
      this.counters.stagedDropped++;
    }
    peer.staged.push(copy);
    this.initiate(peer, now);
  }

  /** The addon confirmed the peer's answered session with its first packet: it seals from now on. */
  promoted(slot: number): void {
    const peer = this.bySlot[slot];
    if (!peer?.next) return;
    peer.current = peer.next;
    peer.next = null;
    this.flushStaged(peer);
  }

  /** A handshake message from address:port (host order), as the addon handed it up. */
  onHandshake(buffer: Buffer, offset: number, length: number, address: number, port: number): void {
    const now = this.now();
    const second = Math.floor(now / 1000);
    if (second !== this.budgetSecond) {
      this.budgetSecond = second;
      this.budget = HANDSHAKES_PER_SECOND;
    }
    if (this.budget <= 0) {
      this.counters.handshakesRateLimited++;
      return;
    }
    this.budget--;
    let message = Buffer.from(buffer.subarray(offset, offset + length));
    let via: Via = 'direct';
    if (message[0] === OVERLAY_MESSAGE.relayed) {
      // Through the relay: taken only from the relay itself; the peer is answered through it.
      const relay = this.relay;
      if (!relay || address !== relay.ip || port !== relay.port) return;
      message = message.subarray(RELAY_HEADER);
      via = 'relay';
    }
    if (message[0] === TYPE_INITIATION && message.length === INITIATION_BYTES)
      this.answerInitiation(message, address, port, now, via);
    else if (message[0] === TYPE_RESPONSE && message.length === RESPONSE_BYTES)
      this.completeInitiation(message, address, port, now, via);
  }

  /** The relay (the cluster manager's rendezvous port) that reaches peers no direct path reaches; null: none. */
  setRelay(relay: { ip: number; port: number } | null): void {
    this.relay = relay;
    if (relay)
      for (const peer of this.byKey.values())
        this.udp.setRelay(peer.slot, relay.ip, relay.port, relayId(peer.publicKey), false);
  }

  /** Once a second: retries, rekeys, keepalives, and forgetting what is idle. */
  tick(now = this.now()): void {
    for (const peer of this.byKey.values()) {
      const initiation = peer.initiation;
      if (initiation && now - initiation.sentAt >= RETRY_MS) {
        if (now - initiation.firstAt >= GIVE_UP_MS) {
          this.initiations.delete(initiation.state.senderIndex);
          peer.initiation = null;
          this.counters.handshakesGivenUp++;
          this.counters.stagedDropped += peer.staged.length;
          peer.staged = [];
        } else {
          this.sendInitiation(peer, now, initiation.firstAt, !this.canSeal(peer, now));
        }
      }
      const current = peer.current;
      if (current && now - current.startedAt >= REJECT_AFTER_MS) peer.current = null;
      if (peer.next && now - peer.next.startedAt >= REJECT_AFTER_MS) peer.next = null;
      const inUse = now - peer.lastUsed < this.rekeyAfterMs;
      if (current && inUse && !peer.initiation) {
        const due = current.initiator ? this.rekeyAfterMs : this.rekeyAfterMs + RETRY_MS * 3;
        if (now - current.startedAt >= due) this.initiate(peer, now);
      }
      if (current && this.canSeal(peer, now)) {
        const native = this.udp.peer(peer.slot);
        // Through the relay: now and then a handshake on the direct path alone (with a punch); if it is answered
        // the peer moves off the relay.
        if (native?.viaRelay && !peer.initiation && now - peer.lastDirectTry >= DIRECT_RETRY_MS) {
          peer.lastDirectTry = now;
          this.sendInitiation(peer, now, now, true, false);
          continue;
        }
        // Sending and hearing nothing back (a NAT on the way lost its mapping, the peer moved): a new handshake
        // to every endpoint, and the peer told to reach out too.
        if (
          native &&
          !peer.initiation &&
          now - peer.lastUsed < KEEPALIVE_MS &&
          (native.msSinceReceived < 0 || native.msSinceReceived >= KEEPALIVE_MS + RETRY_MS)
        ) {
          this.counters.contactLost++;
          this.sendInitiation(peer, now, now, true);
        }
        const quiet = native !== null && (native.msSinceSent < 0 || native.msSinceSent >= KEEPALIVE_MS);
        // Passive: it sent something lately and heard nothing back. Persistent: NATs forget quiet mappings.
        const answer = quiet && native.msSinceReceived >= 0 && native.msSinceReceived < KEEPALIVE_MS;
        const holdMapping =
          native !== null &&
          (native.msSinceSent < 0 || native.msSinceSent >= PERSISTENT_KEEPALIVE_MS) &&
          now - peer.lastUsed < IDLE_MS;
        if (answer || holdMapping) this.sendKeepalive(peer);
      }
      if (now - peer.lastUsed >= IDLE_MS && !peer.initiation && peer.staged.length === 0) {
        const native = this.udp.peer(peer.slot);
        if (!native || native.msSinceReceived < 0 || native.msSinceReceived >= IDLE_MS) this.remove(peer);
      }
    }
    for (const [key, held] of this.held) if (now - held.at >= RETRY_MS) this.held.delete(key);
  }

  views(now = this.now()): PeerView[] {
    return [...this.byKey.values()].map((peer) => {
      const native = this.udp.peer(peer.slot);
      return {
        nodeId: peer.nodeId,
        publicKey: peer.keyText,
        endpoint:
          native?.viaRelay && this.relay
            ? `${numberToIp(this.relay.ip)}:${this.relay.port}`
            : native
              ? `${numberToIp(native.address)}:${native.port}`
              : peer.announced,
        session: this.canSeal(peer, now) ? 'established' : peer.initiation ? 'handshaking' : 'none',
        via: native?.viaRelay ? 'relay' : 'direct',
        cipher: peer.current?.cipher ?? null,
        lastHandshakeMsAgo: peer.lastHandshakeAt < 0 ? null : Math.round(now - peer.lastHandshakeAt),
        rxBytes: native?.rxBytes ?? 0,
        txBytes: native?.txBytes ?? 0,
        roams: native?.roams ?? 0,
      };
    });
  }

  /** Forgets every peer and key (encryption turned off, or the net manager stopping). */
  clear(): void {
    for (const peer of [...this.byKey.values()]) this.remove(peer);
    this.held.clear();
  }

  /**
   * The cluster manager says the peer is making a handshake with this side (hole punching): without a session,
   * this side initiates too, which opens its own NAT for the peer's packets.
   */
  reachOut(peer: Peer): void {
    const now = this.now();
    if (this.canSeal(peer, now)) return;
    this.sendInitiation(peer, now, peer.initiation?.firstAt ?? now, false);
  }

  /** Starts a handshake unless one is under way (the retry timer sends it again). */
  initiate(peer: Peer, now = this.now()): void {
    if (peer.initiation) return;
    // Without a session the peer may sit behind a NAT that drops this until it has sent this way itself.
    this.sendInitiation(peer, now, now, !this.canSeal(peer, now));
  }

  /**
   * `punch`: also have the cluster manager tell the peer to reach out (its NAT may drop this until it does).
   * `relay`: also through the relay (by default on a retry, or while the relay is what reaches the peer).
   */
  private sendInitiation(peer: Peer, now: number, firstAt: number, punch: boolean, relay?: boolean): void {
    if (peer.initiation) this.initiations.delete(peer.initiation.state.senderIndex);
    const senderIndex = this.freshIndex();
    let created: ReturnType<typeof createInitiation>;
    try {
      created = createInitiation(
        this.keys,
        peer.publicKey,
        senderIndex,
        this.timestamp(),
        this.options.offerAes,
      );
    } catch (error) {
      this.counters.handshakesFailed++;
      this.options.logger.warn(
        { nodeId: peer.nodeId, err: (error as Error).message },
        'cannot make an initiation',
      );
      peer.initiation = null;
      return;
    }
    peer.initiation = { state: created.state, sentAt: now, firstAt };
    this.initiations.set(senderIndex, peer);
    this.counters.handshakesInitiated++;
    // To every endpoint it may be at: the one in use, then its candidates; the first to answer wins (and the
    // packets that leave this side open this side's NAT for the answers).
    const native = this.udp.peer(peer.slot);
    const tried = new Set<string>();
    for (const [address, port] of [
      ...(native ? [[native.address, native.port] as const] : []),
      ...peer.candidates,
    ]) {
      const key = `${address}:${port}`;
      if (tried.has(key)) continue;
      tried.add(key);
      this.udp.sendTo(created.message, address, port);
    }
    // Unanswered before, or the relay is what reaches it now: through the relay too (the answer that comes first
    // decides the path; a direct one later moves the peer off the relay).
    if (relay ?? (now - firstAt >= RETRY_MS || this.udp.peer(peer.slot)?.viaRelay === true))
      this.sendTo(peer, created.message, 'relay', 0, 0);
    if (punch) this.options.askPunch?.(peer.keyText);
  }

  private answerInitiation(message: Buffer, address: number, port: number, now: number, via: Via): void {
    let received: ReturnType<typeof consumeInitiation>;
    try {
      received = consumeInitiation(this.keys, message);
    } catch (error) {
      this.failed(error);
      return;
    }
    const keyText = received.remoteStatic.toString('base64');
    const peer = this.byKey.get(keyText);
    if (!peer) {
      // Whose key is it? The cluster manager says; the initiation waits (the initiator also sends it again).
      if (!this.held.has(keyText) && this.held.size >= MAX_HELD_INITIATIONS) return;
      if (!this.held.has(keyText)) this.options.askKey(keyText);
      this.held.set(keyText, { message, address, port, at: now, via });
      return;
    }
    if (peer.lastTimestamp && Buffer.compare(received.timestamp, peer.lastTimestamp) <= 0) {
      this.counters.initiationsReplayed++;
      return;
    }
    const localIndex = this.freshIndex();
    let response: ReturnType<typeof createResponse>;
    try {
      response = createResponse(received, localIndex, this.options.offerAes);
    } catch (error) {
      this.failed(error);
      return;
    }
    if (
      !this.udp.addSession(
        peer.slot,
        localIndex,
        received.senderIndex,
        response.keys.sendKey,
        response.keys.recvKey,
        'next',
        response.cipher,
      )
    ) {
      this.counters.handshakesFailed++;
      return;
    }
    peer.lastTimestamp = received.timestamp;
    peer.next = { localIndex, startedAt: now, initiator: false, cipher: response.cipher };
    peer.lastHandshakeAt = now;
    // Authenticated: the peer is where this came from (directly, or through the relay).
    this.reachedVia(peer, address, port, via);
    this.sendTo(peer, response.message, via, address, port);
    this.counters.handshakesAnswered++;
  }

  private completeInitiation(message: Buffer, address: number, port: number, now: number, via: Via): void {
    const peer = this.initiations.get(responseReceiver(message));
    const initiation = peer?.initiation;
    if (!peer || !initiation) {
      this.counters.handshakesFailed++;
      return;
    }
    let completed: ReturnType<typeof consumeResponse>;
    try {
      completed = consumeResponse(initiation.state, message);
    } catch (error) {
      this.failed(error);
      return;
    }
    this.initiations.delete(initiation.state.senderIndex);
    peer.initiation = null;
    const localIndex = initiation.state.senderIndex;
    if (
      !this.udp.addSession(
        peer.slot,
        localIndex,
        completed.remoteIndex,
        completed.keys.sendKey,
        completed.keys.recvKey,
        'current',
        completed.cipher,
      )
    ) {
      this.counters.handshakesFailed++;
      return;
    }
    peer.current = { localIndex, startedAt: now, initiator: true, cipher: completed.cipher };
    peer.lastHandshakeAt = now;
    this.reachedVia(peer, address, port, via);
    this.counters.handshakesCompleted++;
    // The responder seals with its new keys once something sealed with them arrives: staged packets, or else an
    // empty one.
    if (peer.staged.length > 0) this.flushStaged(peer);
    else this.sendKeepalive(peer);
  }

  private flushStaged(peer: Peer): void {
    const staged = peer.staged;
    peer.staged = [];
    const { offsets, lengths, peers } = this.one;
    for (const packet of staged) {
      offsets[0] = SEALED_HEADROOM;
      lengths[0] = packet.length - SEALED_HEADROOM - SEALED_TAG;
      peers[0] = peer.slot;
      this.udp.sendSealed(packet, offsets, lengths, peers, 1);
    }
  }

  private sendKeepalive(peer: Peer): void {
    const { offsets, lengths, peers } = this.one;
    offsets[0] = SEALED_HEADROOM;
    lengths[0] = 0;
    peers[0] = peer.slot;
    if (this.udp.sendSealed(this.scratch, offsets, lengths, peers, 1) === 1) this.counters.keepalivesSent++;
  }

  /** An authenticated handshake says where the peer is: its address, or behind the relay. */
  private reachedVia(peer: Peer, address: number, port: number, via: Via): void {
    if (via === 'direct') this.udp.setPeer(peer.slot, address, port);
    else if (this.relay)
      this.udp.setRelay(peer.slot, this.relay.ip, this.relay.port, relayId(peer.publicKey), true);
  }

  /** A handshake message to the peer: to address:port, or through the relay. */
  private sendTo(peer: Peer, message: Buffer, via: Via, address: number, port: number): void {
    if (via === 'direct') {
      this.udp.sendTo(message, address, port);
      return;
    }
    const relay = this.relay;
    if (!relay) return;
    const wrapped = Buffer.alloc(RELAY_HEADER + message.length);
    wrapped[0] = OVERLAY_MESSAGE.toRelay;
    relayId(peer.publicKey).copy(wrapped, 4);
    message.copy(wrapped, RELAY_HEADER);
    this.udp.sendTo(wrapped, relay.ip, relay.port);
  }

  private failed(error: unknown): void {
    this.counters.handshakesFailed++;
    if (!(error instanceof HandshakeError)) throw error;
  }

  private remove(peer: Peer): void {
    if (peer.initiation) this.initiations.delete(peer.initiation.state.senderIndex);
    this.byKey.delete(peer.keyText);
    this.bySlot[peer.slot] = undefined;
    this.freeSlots.push(peer.slot);
    this.udp.removePeer(peer.slot);
  }

  /** A random local index (never 0) that no initiation in flight uses; the addon refuses one a session has. */
  private freshIndex(): number {
    for (;;) {
      const index = randomInt(1, 0xffffffff);
      if (!this.initiations.has(index)) return index;
    }
  }

  /** 12 bytes that grow with every initiation: wall-clock nanoseconds, kept increasing across a clock step back. */
  private timestamp(): Buffer {
    let stamp = BigInt(Date.now()) * 1_000_000n;
    if (stamp <= this.lastTimestamp) stamp = this.lastTimestamp + 1n;
    this.lastTimestamp = stamp;
    const bytes = Buffer.alloc(12);
    bytes.writeBigUInt64BE(stamp / 1_000_000_000n, 0);
    bytes.writeUInt32BE(Number(stamp % 1_000_000_000n), 8);
    return bytes;
  }
}

type Via = 'direct' | 'relay';
