/**
 * TUN devices through the project's own N-API addon (`net-manager/native`, built by `npm install` or
 * `npm run build:native`). The addon only moves bytes in batches, between the kernel and buffers allocated once
 * by the caller; packet handling stays in TypeScript. Readiness comes from a `uv_poll` handle on Node's own
 * event loop, so nothing blocks a thread and a closed device keeps nothing alive.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { projectRoot } from '../shared/paths.js';

/** Where `node-gyp rebuild --directory=net-manager/native` puts the addon. */
export const ADDON_PATH = join(projectRoot(), 'net-manager', 'native', 'build', 'Release', 'edge_tun.node');

/** Drop and error counters of a TUN device, kept by the addon. */
export interface TunStats {
  /** Packets longer than the slot they were read into: dropped. */
  oversized: number;
  /** Packets the kernel refused to take (write returned false). */
  writeErrors: number;
  /** Reads that failed with something other than EAGAIN. */
  readErrors: number;
  /** Poll errors (the fd went bad); polling stops at the first. */
  pollErrors: number;
  /** Offload: TCP super-packets the kernel handed over, and the segments they were cut into. */
  superPacketsRead: number;
  segmentsCut: number;
  /** Offload: super-packets written, and the segments glued into them. */
  superPacketsWritten: number;
  segmentsGlued: number;
  /** Offload: packets dropped for an unusable virtio header (bad checksum offsets, IPv6 or UDP super-packets). */
  offloadDropped: number;
}

/** Drop and error counters of a UDP endpoint, kept by the addon. */
export interface UdpStats {
  /** Datagrams longer than the slot they were received into: dropped. */
  truncated: number;
  /** Datagrams the kernel refused to take (EAGAIN, ENOBUFS, unreachable ...): dropped. */
  sendErrors: number;
  /** Receives that reported a pending socket error instead of data. */
  recvErrors: number;
  /** Poll errors (the fd went bad); polling stops at the first. */
  pollErrors: number;
  /** Offload: messages sent as one UDP_SEGMENT run of datagrams. */
  gsoSends: number;
  /** Offload: runs the kernel would not segment, sent one datagram at a time instead. */
  gsoFallbacks: number;
  /** Offload: coalesced datagrams received (UDP_GRO). */
  groReceives: number;
  /**
   * Encrypted overlay only (see net-manager/native/secure.h): packets opened and sealed, keepalives and handshake
   * messages received; and what was dropped: `badLength`, `unknownType`, `plaintext` (unencrypted packets),
   * `unknownSession` (strangers), `expired`, `replayed`, `badTag` (forged or corrupted), `noSession` (nothing to
   * seal with). `promoted`: answered sessions confirmed; `roams`: endpoints moved by authenticated packets.
   */
  opened?: number;
  sealed?: number;
  keepalives?: number;
  handshakes?: number;
  badLength?: number;
  unknownType?: number;
  plaintext?: number;
  unknownSession?: number;
  expired?: number;
  replayed?: number;
  badTag?: number;
  noSession?: number;
  promoted?: number;
  roams?: number;
  /** Relay: data packets that came through it and went out through it; relayed packets from elsewhere, dropped. */
  relayedIn?: number;
  relayedOut?: number;
  notFromRelay?: number;
}

/** Called when the fd is readable; with an Error once if polling failed (polling has stopped then). */
export type ReadableCallback = (error?: Error) => void;

/** The addon's classes as JavaScript sees them (argument checks happen in C++). */
export interface NativeTun {
  readonly name: string;
  readonly offload: boolean;
  readonly fd: number;
  readBatch(buffer: Uint8Array, slotSize: number, lengths: Int32Array): number;
  write(buffer: Uint8Array, offset: number, length: number): boolean;
  writeBatch(buffer: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number;
  onReadable(callback: ReadableCallback): void;
  close(): void;
  stats(): TunStats;
  linkFastPath(udp: NativeUdp | null, capacity?: number): void;
  installFlow(
    direction: 0 | 1,
    protocol: number,
    src: number,
    srcPort: number,
    dst: number,
    dstPort: number,
    newSrc: number,
    newDst: number,
    slot: number,
    peerIp: number,
    peerPort: number,
    dependency0: number,
    dependency1: number,
    dependency2: number,
  ): void;
  forgetAddress(address: number): number;
  forgetFlow(
    direction: 0 | 1,
    protocol: number,
    src: number,
    srcPort: number,
    dst: number,
    dstPort: number,
  ): boolean;
  forgetAllFlows(): number;
  flowActivity(out: Uint32Array): number;
  fastPathStats(): FastPathStats | null;
}

/** The fast path's flow cache and what went through it (native/fastpath.h). */
export interface FastPathStats {
  /** Flows cached, and room for them. */
  flows: number;
  capacity: number;
  /** Packets forwarded in C: read from the TUN and sent, received and written into the TUN. */
  hitsOut: number;
  hitsIn: number;
  /** Packets of ordinary flows the cache did not know (or that came from another sender): the slow path's. */
  misses: number;
  /** Packets the fast path never takes (fragments, ICMP errors, other protocols ...): the slow path's. */
  ineligible: number;
  installed: number;
  /** Flows pushed out by newer ones (the cache is full where they hash). */
  replaced: number;
  /** Flows forgotten because what they were decided from changed. */
  forgotten: number;
}

export interface NativeUdp {
  readonly port: number;
  readonly offload: boolean;
  readonly fd: number;
  recvBatch(
    buffer: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
  ): number;
  sendBatch(
    buffer: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
    count: number,
  ): number;
  onReadable(callback: ReadableCallback): void;
  close(): void;
  stats(): UdpStats;
  secure(on: boolean): void;
  setPeer(slot: number, address: number, port: number): void;
  setRelay(slot: number, address: number, port: number, relayId: Uint8Array, use: boolean): boolean;
  removePeer(slot: number): void;
  addSession(
    slot: number,
    localIndex: number,
    remoteIndex: number,
    sendKey: Uint8Array,
    recvKey: Uint8Array,
    role: 0 | 1,
    cipher?: 0 | 1,
  ): boolean;
  removeSession(localIndex: number): void;
  peer(slot: number): NativePeer | null;
  recvOpen(
    buffer: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
    peers: Int32Array,
  ): number;
  sendSealed(
    buffer: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    peers: Int32Array,
    count: number,
  ): number;
}

/** A peer of the encrypted overlay as the addon holds it (session indices: 0 for none). */
export interface NativePeer {
  /** Where its packets go: host-order IPv4 and port; follows authenticated packets (roaming). */
  address: number;
  port: number;
  current: number;
  next: number;
  previous: number;
  /** Age of the current session (-1: none). */
  currentAgeMs: number;
  /** Since the last authenticated packet from it, and the last packet sealed for it (-1: never). */
  msSinceReceived: number;
  msSinceSent: number;
  rxBytes: number;
  txBytes: number;
  roams: number;
  /** Its packets go through the relay (they last came through it). */
  viaRelay: boolean;
  relayedPackets: number;
}

export interface EdgeTunAddon {
  Tun: new (name: string, offload: boolean) => NativeTun;
  Udp: new (address: string, port: number, offload: boolean) => NativeUdp;
}

let addon: EdgeTunAddon | undefined;

/** Loads the addon once; throws a clear Error when it was not built. */
export function loadTunAddon(): EdgeTunAddon {
  if (!addon) {
    try {
      addon = createRequire(import.meta.url)(ADDON_PATH) as EdgeTunAddon;
    } catch (error) {
      throw new Error(
        `cannot load the TUN addon ${ADDON_PATH} (build it with "npm run build:native"; it needs a C++ ` +
          `compiler, make and python3): ${(error as Error).message}`,
        { cause: error },
      );
    }
  }
  return addon;
}

export interface TunOpenOptions {
  /**
   * IFF_VNET_HDR with TUNSETOFFLOAD (checksum, TSO4): the kernel hands over TCP super-packets of up to 64 KiB,
   * which the addon cuts into MTU-sized segments (full checksums) in the slots of readBatch; writeBatch glues
   * consecutive segments of a TCP flow back into super-packets. Callers still see plain IP packets only, but must
   * drain readBatch until it returns fewer than the slots it was given (the rest of a super-packet waits in the
   * addon, where no poll event reminds of it).
   */
  offload?: boolean;
}

/** A TUN device (IFF_TUN | IFF_NO_PI): IP packets in and out, no link-layer header. */
export class TunDevice {
  /** The name the kernel gave it (a `tun%d` template gets its number here). */
  readonly name: string;
  /** Whether TSO/GRO-like offloads are on (see {@link TunOpenOptions.offload}). */
  readonly offload: boolean;

  private constructor(private readonly native: NativeTun) {
    this.name = native.name;
    this.offload = native.offload;
  }

  /**
   * Creates (or attaches to) TUN device `name` in the calling process's network namespace: IFF_TUN | IFF_NO_PI,
   * O_NONBLOCK, FD_CLOEXEC. Throws a clear Error (with errno text and `code`) on failure, e.g. no /dev/net/tun
   * or not root; a RangeError for a name longer than 15 characters.
   */
  static open(name: string, options: TunOpenOptions = {}): TunDevice {
    const { Tun } = loadTunAddon();
    return new TunDevice(new Tun(name, options.offload === true));
  }

  /**
   * Reads packets until EAGAIN or until lengths.length packets were read; packet i goes to
   * buffer[i*slotSize ..], its length to lengths[i]. Returns the count (0 when nothing was waiting). Packets
   * longer than slotSize are dropped and counted. The buffer must hold lengths.length slots (RangeError).
   */
  readBatch(buffer: Uint8Array, slotSize: number, lengths: Int32Array): number {
    return this.native.readBatch(buffer, slotSize, lengths);
  }

  /** Writes one IP packet; false when the kernel refused it (dropped and counted, never throws for a bad packet). */
  write(buffer: Uint8Array, offset: number, length: number): boolean {
    return this.native.write(buffer, offset, length);
  }

  /**
   * Writes packets buffer[offsets[i] .. offsets[i]+lengths[i]] for i < count in one call into the addon: one
   * write(2) each, or with offload one per run of TCP segments glued into a super-packet. Returns how many
   * packets the kernel took; the others are dropped and counted as writeErrors.
   */
  writeBatch(buffer: Uint8Array, offsets: Int32Array, lengths: Int32Array, count: number): number {
    return this.native.writeBatch(buffer, offsets, lengths, count);
  }

  /**
   * Calls `callback` (on Node's own event loop, through uv_poll) whenever the device is readable; the callback
   * drains it with readBatch. Calling it again replaces the callback. If polling fails (the fd went bad) the
   * callback gets an Error once and polling stops. An exception thrown by the callback is an uncaught exception.
   */
  onReadable(callback: ReadableCallback): void {
    this.native.onReadable(callback);
  }

  /** Stops polling and closes the fd; idempotent. After close nothing of this device keeps the process alive. */
  close(): void {
    this.native.close();
  }

  /** Drop counters kept by the addon. */
  stats(): TunStats {
    return this.native.stats();
  }

  /**
   * Links the fast path between this device and `udp` (a flow cache of `capacity` entries, in the addon): from
   * now on the poll callbacks forward packets of cached flows in C and call back only for the others, which
   * readBatch (and the endpoint's recvBatch / recvOpen) then hand out. null unlinks it. The cache is reached
   * through the native object (see routing/fast-path.ts).
   */
  linkFastPath(udp: NativeUdp | null, capacity = 8192): NativeTun {
    this.native.linkFastPath(udp, capacity);
    return this.native;
  }
}
