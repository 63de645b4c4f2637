/**
 * The UDP side of the overlay: IP packets travel as the payload of UDP datagrams to the peer worker's port
 * (50103). Batched, allocation-free I/O through the same addon as the TUN device (recvmmsg/sendmmsg over
 * buffers and typed arrays the caller allocates once), readiness through `uv_poll` on Node's event loop.
 */
import { RELAY_HEADER_BYTES } from '../shared/overlay-wire.js';
import {
  loadTunAddon,
  type NativePeer,
  type NativeUdp,
  type ReadableCallback,
  type UdpStats,
} from './tun.js';

/** Bytes of a data message before the packet it carries, and after it (the tag): see native/secure.h. */
export const SEALED_HEADER = 16;
export const SEALED_TAG = 16;
/** The relay's header in front of a relayed message (type, zeros, the peer's relay id). */
export const RELAY_HEADER = RELAY_HEADER_BYTES;
/** Free bytes sendSealed needs before each packet: the header, and the relay's when the peer is reached through it. */
export const SEALED_HEADROOM = SEALED_HEADER + RELAY_HEADER;
/** Set in `peers[i]` by recvOpen when the packet confirmed the peer's `next` session. */
export const PROMOTED = 1 << 30;

/** A non-blocking IPv4 UDP socket for overlay traffic. */
export class UdpEndpoint {
  /** The bound port (the one the kernel picked for port 0). */
  readonly port: number;
  /** Whether UDP GSO/GRO are used (see {@link UdpEndpoint.bind}). */
  readonly offload: boolean;

  /** Scratch for sendTo (no allocation per message). */
  private readonly one = {
    offsets: new Int32Array(1),
    lengths: new Int32Array(1),
    addresses: new Uint32Array(1),
    ports: new Uint16Array(1),
  };

  /** The addon's object, for the fast path (TunDevice.linkFastPath). */
  private constructor(readonly native: NativeUdp) {
    this.port = native.port;
    this.offload = native.offload;
  }

  /**
   * A non-blocking UDP socket bound to address:port (port 0: any), SO_RCVBUF/SO_SNDBUF raised to 4 MiB
   * (SO_RCVBUFFORCE/SO_SNDBUFFORCE as root), FD_CLOEXEC. Throws a clear Error with `code` (EADDRINUSE ...);
   * a TypeError for an address that is not a dotted quad, a RangeError for a bad port.
   *
   * With `offload`, sendBatch sends each run of datagrams to one peer that are as long as the run's first (the
   * last may be shorter) as one UDP_SEGMENT message, and the socket takes coalesced datagrams (UDP_GRO) that
   * recvBatch cuts back into datagrams; the wire carries the same datagrams either way. recvBatch must then be
   * drained until it returns fewer than the slots it was given.
   */
  static bind(address: string, port: number, options: { offload?: boolean } = {}): UdpEndpoint {
    const { Udp } = loadTunAddon();
    return new UdpEndpoint(new Udp(address, port, options.offload === true));
  }

  /**
   * recvmmsg(MSG_DONTWAIT): up to lengths.length datagrams (at most 1024 per call); datagram i at
   * buffer[i*slotSize ..], its length in lengths[i], the sender's IPv4 address as an unsigned 32-bit number in
   * host order in addresses[i] (10.0.0.1 -> 0x0a000001), the sender's port in ports[i]. Truncated datagrams are
   * dropped and counted. Returns the count (0 on EAGAIN). addresses and ports must be at least as long as lengths,
   * the buffer must hold lengths.length slots (RangeError).
   */
  recvBatch(
    buffer: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
  ): number {
    return this.native.recvBatch(buffer, slotSize, lengths, addresses, ports);
  }

  /**
   * sendmmsg of `count` datagrams: datagram i is buffer[offsets[i] .. offsets[i]+lengths[i]] to
   * addresses[i]:ports[i]. Returns how many were handed to the kernel; the rest (EAGAIN, ENOBUFS,
   * unreachable ...) are dropped and counted, never thrown. Out-of-bounds ranges throw a RangeError before
   * anything is sent.
   */
  sendBatch(
    buffer: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
    count: number,
  ): number {
    return this.native.sendBatch(buffer, offsets, lengths, addresses, ports, count);
  }

  /**
   * One datagram, `message` whole, to address:port (host-order IPv4): handshakes, probes, relay framing. True when
   * the kernel took it; a refusal is dropped and counted, as in sendBatch.
   */
  sendTo(message: Uint8Array, address: number, port: number): boolean {
    const one = this.one;
    one.lengths[0] = message.length;
    one.addresses[0] = address;
    one.ports[0] = port;
    return this.native.sendBatch(message, one.offsets, one.lengths, one.addresses, one.ports, 1) === 1;
  }

  /**
   * Calls `callback` on Node's event loop whenever datagrams are waiting; the callback drains them with
   * recvBatch. Calling it again replaces the callback. A poll error is passed once and stops polling.
   */
  onReadable(callback: ReadableCallback): void {
    this.native.onReadable(callback);
  }

  // --- encryption (net-manager/native/secure.h) -----------------------------------------------------------

  /** Turns the encrypted overlay on (empty peer and session tables) or off (every key dropped). */
  secure(on: boolean): void {
    this.native.secure(on);
  }

  /** Where peer `slot` is sent to (host-order IPv4), until an authenticated packet from elsewhere moves it. */
  setPeer(slot: number, address: number, port: number): void {
    this.native.setPeer(slot, address, port);
  }

  /** The relay that reaches peer `slot` and its id there (8 bytes); `use`: send through it from now on. */
  setRelay(slot: number, address: number, port: number, relayId: Uint8Array, use: boolean): boolean {
    return this.native.setRelay(slot, address, port, relayId, use);
  }

  /** Forgets a peer and its sessions. */
  removePeer(slot: number): void {
    this.native.removePeer(slot);
  }

  /**
   * Installs a session's keys: `current` (sealing from now on; the one before stays to open what is in flight)
   * or `next` (answered here; it seals once the first packet sealed with it arrives), with the data cipher the
   * handshake picked. False when `localIndex` is taken or `slot` is no peer.
   */
  addSession(
    slot: number,
    localIndex: number,
    remoteIndex: number,
    sendKey: Uint8Array,
    recvKey: Uint8Array,
    role: 'current' | 'next',
    cipher: 'chacha20-poly1305' | 'aes-256-gcm' = 'chacha20-poly1305',
  ): boolean {
    return this.native.addSession(
      slot,
      localIndex,
      remoteIndex,
      sendKey,
      recvKey,
      role === 'current' ? 0 : 1,
      cipher === 'aes-256-gcm' ? 1 : 0,
    );
  }

  removeSession(localIndex: number): void {
    this.native.removeSession(localIndex);
  }

  peer(slot: number): NativePeer | null {
    return this.native.peer(slot);
  }

  /**
   * Like recvBatch, each datagram opened in place. Data: the packet starts SEALED_HEADER bytes into its slot,
   * `lengths[i]` is its length (0: a keepalive), `peers[i]` its peer slot, with PROMOTED set when it confirmed
   * the peer's `next` session. Handshake messages: as received from the slot's start, `peers[i]` -1. Anything
   * else is dropped and counted. Fewer than `lengths.length` means the socket is empty.
   */
  recvOpen(
    buffer: Uint8Array,
    slotSize: number,
    lengths: Int32Array,
    addresses: Uint32Array,
    ports: Uint16Array,
    peers: Int32Array,
  ): number {
    return this.native.recvOpen(buffer, slotSize, lengths, addresses, ports, peers);
  }

  /**
   * Seals packet i (buffer[offsets[i] .. +lengths[i]], with SEALED_HEADROOM free bytes before it and
   * SEALED_TAG after it) for peer slot `peers[i]` and sends it to the peer, or through its relay. Returns how many the kernel took;
   * packets for peers without a usable session are dropped and counted (`noSession`).
   */
  sendSealed(
    buffer: Uint8Array,
    offsets: Int32Array,
    lengths: Int32Array,
    peers: Int32Array,
    count: number,
  ): number {
    return this.native.sendSealed(buffer, offsets, lengths, peers, count);
  }

  /** Stops polling and closes the socket; idempotent. */
  close(): void {
    this.native.close();
  }

  /** Drop counters kept by the addon. */
  stats(): UdpStats {
    return this.native.stats();
  }
}
