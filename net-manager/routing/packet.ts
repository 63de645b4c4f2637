/**
 * IPv4 packets read and rewritten in place inside the forwarder's shared batch buffers. Nothing here allocates:
 * parsing fills a reused `PacketInfo`, addresses are unsigned 32-bit numbers in host order (as `ipToNumber`
 * gives), and checksums are fixed up incrementally (RFC 1624) instead of recomputed.
 */

export const PROTOCOL_ICMP = 1;
export const PROTOCOL_TCP = 6;
export const PROTOCOL_UDP = 17;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

const IPV4_MIN_HEADER = 20;
const TCP_MIN_HEADER = 20;
const UDP_HEADER = 8;
const ICMP_HEADER = 8;
/** An ICMP error carries the offending IP header and at least the first 8 bytes of what followed it. */
const ICMP_ERROR_MIN_QUOTE = 8;

export type PacketDropReason = 'not-ipv4' | 'truncated' | 'bad-header';

/** What `parsePacket` learns about one packet; one object is reused for every packet of a batch. */
export interface PacketInfo {
  headerLength: number;
  /** The IP total length; bytes beyond it in the buffer are ignored. */
  totalLength: number;
  protocol: number;
  src: number;
  dst: number;
  /** IP identification, which ties the fragments of one datagram together. */
  ipId: number;
  /** More fragments follow, or this one lies past offset 0. */
  isFragment: boolean;
  /** Fragment offset 0, so the transport header is here (true for every unfragmented packet too). */
  firstFragment: boolean;
  moreFragments: boolean;
  /** TCP/UDP ports, the ICMP query identifier as both ports, or 0 (non-first fragments, other protocols). */
  srcPort: number;
  dstPort: number;
  /** ICMP type and code, -1 for other protocols and for non-first fragments. */
  icmpType: number;
  icmpCode: number;
  /** An ICMP error whose quoted IP header (and ports, where quoted) was read into the `inner*` fields. */
  hasInner: boolean;
  /** Offset of the quoted IP header from the start of the packet. */
  innerOffset: number;
  innerHeaderLength: number;
  /** Bytes of the quoted datagram present, from its IP header on. */
  innerLength: number;
  innerProtocol: number;
  innerSrc: number;
  innerDst: number;
  innerSrcPort: number;
  innerDstPort: number;
}

export function createPacketInfo(): PacketInfo {
  return {
    headerLength: 0,
    totalLength: 0,
    protocol: 0,
    src: 0,
    dst: 0,
    ipId: 0,
    isFragment: false,
    firstFragment: false,
    moreFragments: false,
    srcPort: 0,
    dstPort: 0,
    icmpType: -1,
    icmpCode: -1,
    hasInner: false,
    innerOffset: 0,
    innerHeaderLength: 0,
    innerLength: 0,
    innerProtocol: 0,
    innerSrc: 0,
    innerDst: 0,
    innerSrcPort: 0,
    innerDstPort: 0,
  };
}

// --- byte access (callers have checked the bounds) --------------------------------------------------------

function read16(buffer: Uint8Array, at: number): number {
  return (buffer[at]! << 8) | buffer[at + 1]!;
}

function read32(buffer: Uint8Array, at: number): number {
  return ((buffer[at]! << 24) | (buffer[at + 1]! << 16) | (buffer[at + 2]! << 8) | buffer[at + 3]!) >>> 0;
}

function write16(buffer: Uint8Array, at: number, value: number): void {
  buffer[at] = value >>> 8;
  buffer[at + 1] = value & 0xff;
}

function write32(buffer: Uint8Array, at: number, value: number): void {
  buffer[at] = value >>> 24;
  buffer[at + 1] = (value >>> 16) & 0xff;
  buffer[at + 2] = (value >>> 8) & 0xff;
  buffer[at + 3] = value & 0xff;
}

// --- one's complement arithmetic ------------------------------------------------------------------------

/** Folds a non-negative sum below 2^32 (a whole 64 KB packet with its pseudo-header stays below) to 16 bits. */
function fold(sum: number): number {
  let folded = (sum & 0xffff) + (sum >>> 16);
  folded = (folded & 0xffff) + (folded >>> 16);
  return (folded & 0xffff) + (folded >>> 16);
}

/** The one's complement sum (not complemented, not folded) of `length` bytes; an odd last byte is padded. */
function sumBytes(buffer: Uint8Array, offset: number, length: number, initial: number): number {
  let sum = initial;
  const end = offset + length - 1;
  let at = offset;
  for (; at < end; at += 2) sum += (buffer[at]! << 8) | buffer[at + 1]!;
  if (at === end) sum += buffer[at]! << 8;
  return sum;
}

/** RFC 1071 checksum of `length` bytes, starting from a one's complement sum `initial` (e.g. a pseudo-header). */
export function internetChecksum(buffer: Uint8Array, offset: number, length: number, initial = 0): number {
  return ~fold(sumBytes(buffer, offset, length, initial)) & 0xffff;
}

/** The IPv4 header checksum the header at `offset` should carry (its own checksum field counted as zero). */
export function ipv4HeaderChecksum(buffer: Uint8Array, offset: number): number {
  const headerLength = (buffer[offset]! & 0x0f) * 4;
  return ~fold(sumBytes(buffer, offset, headerLength, 0) - read16(buffer, offset + 10)) & 0xffff;
}

/** The one's complement sum of the TCP/UDP pseudo-header. */
function pseudoHeaderSum(src: number, dst: number, protocol: number, transportLength: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + transportLength;
}

/**
 * The TCP, UDP or ICMP checksum an unfragmented packet should carry, computed from scratch (its own checksum
 * field counted as zero). UDP's "0 means none" is not applied: a computed 0 is returned as 0xffff for UDP.
 */
export function transportChecksum(buffer: Uint8Array, offset: number): number {
  const headerLength = (buffer[offset]! & 0x0f) * 4;
  const totalLength = read16(buffer, offset + 2);
  const protocol = buffer[offset + 9]!;
  const start = offset + headerLength;
  const length = totalLength - headerLength;
  const field = checksumFieldOffset(protocol);
  const initial =
    protocol === PROTOCOL_ICMP
      ? 0
      : pseudoHeaderSum(read32(buffer, offset + 12), read32(buffer, offset + 16), protocol, length);
  const checksum = ~fold(sumBytes(buffer, start, length, initial) - read16(buffer, start + field)) & 0xffff;
  return protocol === PROTOCOL_UDP && checksum === 0 ? 0xffff : checksum;
}

function checksumFieldOffset(protocol: number): number {
  if (protocol === PROTOCOL_TCP) return 16;
  if (protocol === PROTOCOL_UDP) return 6;
  return 2;
}

/** The one's complement difference that replacing the address pair (oldSrc, oldDst) by (newSrc, newDst) makes. */
function addressDelta(oldSrc: number, oldDst: number, newSrc: number, newDst: number): number {
  return fold(
    (~oldSrc >>> 16) +
      (~oldSrc & 0xffff) +
      (~oldDst >>> 16) +
      (~oldDst & 0xffff) +
      (newSrc >>> 16) +
      (newSrc & 0xffff) +
      (newDst >>> 16) +
      (newDst & 0xffff),
  );
}

/** RFC 1624 eqn. 3 on a checksum field at `at`: HC' = ~(~HC + delta). */
function adjustChecksum(buffer: Uint8Array, at: number, delta: number): number {
  const checksum = ~fold((~read16(buffer, at) & 0xffff) + delta) & 0xffff;
  write16(buffer, at, checksum);
  return checksum;
}

/** A checksum field that holds the folded pseudo-header sum, not yet complemented (offloaded checksums). */
function isIcmpQuery(type: number): boolean {
  // echo reply/request, timestamp, information, address mask: all carry an identifier
  return type === ICMP_ECHO_REPLY || type === ICMP_ECHO_REQUEST || (type >= 13 && type <= 18);
}

function isIcmpError(type: number): boolean {
  // destination unreachable, source quench, redirect, time exceeded, parameter problem
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

// --- parsing -------------------------------------------------------------------------------------------

/**
 * Reads the IPv4 packet of `length` bytes at `offset` into `out`. Returns why the packet must be dropped, or
 * null. Never throws, whatever the bytes.
 */
export function parsePacket(
  buffer: Uint8Array,
  offset: number,
  length: number,
  out: PacketInfo,
): PacketDropReason | null {
  out.hasInner = false;
  out.srcPort = 0;
  out.dstPort = 0;
  out.icmpType = -1;
  out.icmpCode = -1;
  if (!(offset >= 0 && length >= 1 && offset + length <= buffer.length)) return 'truncated';
  if (buffer[offset]! >>> 4 !== 4) return 'not-ipv4';
  if (length < IPV4_MIN_HEADER) return 'truncated';
  const headerLength = (buffer[offset]! & 0x0f) * 4;
  if (headerLength < IPV4_MIN_HEADER || headerLength > length) return 'truncated';
  const totalLength = read16(buffer, offset + 2);
  if (totalLength > length || totalLength < headerLength) return 'truncated';
  if (fold(sumBytes(buffer, offset, headerLength, 0)) !== 0xffff) return 'bad-header';
  const fragment = read16(buffer, offset + 6);
  const fragmentOffset = (fragment & 0x1fff) * 8;
  if (fragmentOffset + totalLength - headerLength > 0xffff) return 'bad-header';

  const protocol = buffer[offset + 9]!;
  out.headerLength = headerLength;
  out.totalLength = totalLength;
  out.protocol = protocol;
  out.src = read32(buffer, offset + 12);
  out.dst = read32(buffer, offset + 16);
  out.ipId = read16(buffer, offset + 4);
  out.moreFragments = (fragment & 0x2000) !== 0;
  out.firstFragment = fragmentOffset === 0;
  out.isFragment = out.moreFragments || !out.firstFragment;
  if (!out.firstFragment) return null;

  const l4 = offset + headerLength;
  const l4Length = totalLength - headerLength;
  if (protocol === PROTOCOL_TCP) {
    if (l4Length < TCP_MIN_HEADER) return 'truncated';
    const dataOffset = (buffer[l4 + 12]! >>> 4) * 4;
    if (dataOffset < TCP_MIN_HEADER) return 'bad-header';
    if (dataOffset > l4Length) return 'truncated';
    out.srcPort = read16(buffer, l4);
    out.dstPort = read16(buffer, l4 + 2);
  } else if (protocol === PROTOCOL_UDP) {
    if (l4Length < UDP_HEADER) return 'truncated';
    out.srcPort = read16(buffer, l4);
    out.dstPort = read16(buffer, l4 + 2);
  } else if (protocol === PROTOCOL_ICMP) {
    if (l4Length < ICMP_HEADER) return 'truncated';
    const type = buffer[l4]!;
    out.icmpType = type;
    out.icmpCode = buffer[l4 + 1]!;
    if (isIcmpQuery(type)) {
      const identifier = read16(buffer, l4 + 4);
      out.srcPort = identifier;
      out.dstPort = identifier;
    } else if (isIcmpError(type)) {
      parseInner(buffer, l4 + ICMP_HEADER, l4Length - ICMP_HEADER, offset, out);
    }
  }
  return null;
}

/** Reads the datagram quoted by an ICMP error; a quote too short or malformed leaves `hasInner` false. */
function parseInner(
  buffer: Uint8Array,
  at: number,
  available: number,
  packet: number,
  out: PacketInfo,
): void {
  if (available < IPV4_MIN_HEADER || buffer[at]! >>> 4 !== 4) return;
  const headerLength = (buffer[at]! & 0x0f) * 4;
  if (headerLength < IPV4_MIN_HEADER || headerLength + ICMP_ERROR_MIN_QUOTE > available) return;
  const protocol = buffer[at + 9]!;
  const l4 = at + headerLength;
  out.innerSrcPort = 0;
  out.innerDstPort = 0;
  if ((read16(buffer, at + 6) & 0x1fff) === 0) {
    if (protocol === PROTOCOL_TCP || protocol === PROTOCOL_UDP) {
      out.innerSrcPort = read16(buffer, l4);
      out.innerDstPort = read16(buffer, l4 + 2);
    } else if (protocol === PROTOCOL_ICMP && isIcmpQuery(buffer[l4]!)) {
      out.innerSrcPort = read16(buffer, l4 + 4);
      out.innerDstPort = out.innerSrcPort;
    }
  }
  out.hasInner = true;
  out.innerOffset = at - packet;
  out.innerHeaderLength = headerLength;
  out.innerLength = available;
  out.innerProtocol = protocol;
  out.innerSrc = read32(buffer, at + 12);
  out.innerDst = read32(buffer, at + 16);
}

// --- rewriting -----------------------------------------------------------------------------------------

/**
 * Replaces the source and destination of the parsed packet at `offset` and fixes the IP header checksum and,
 * in a first fragment, the TCP/UDP checksum (the pseudo-header holds the addresses; a UDP checksum of 0 means
 * none and stays 0). Updates `info.src` and `info.dst`.
 */
export function rewriteAddresses(
  buffer: Uint8Array,
  offset: number,
  info: PacketInfo,
  newSrc: number,
  newDst: number,
): void {
  const delta = addressDelta(info.src, info.dst, newSrc, newDst);
  write32(buffer, offset + 12, newSrc);
  write32(buffer, offset + 16, newDst);
  adjustChecksum(buffer, offset + 10, delta);
  info.src = newSrc;
  info.dst = newDst;
  if (!info.firstFragment) return;
  const l4 = offset + info.headerLength;
  if (info.protocol === PROTOCOL_TCP) {
    adjustChecksum(buffer, l4 + 16, delta);
  } else if (info.protocol === PROTOCOL_UDP) {
    if (read16(buffer, l4 + 6) !== 0 && adjustChecksum(buffer, l4 + 6, delta) === 0) {
      write16(buffer, l4 + 6, 0xffff);
    }
  }
}

export function rewriteSource(buffer: Uint8Array, offset: number, info: PacketInfo, newSrc: number): void {
  rewriteAddresses(buffer, offset, info, newSrc, info.dst);
}

export function rewriteDestination(
  buffer: Uint8Array,
  offset: number,
  info: PacketInfo,
  newDst: number,
): void {
  rewriteAddresses(buffer, offset, info, info.src, newDst);
}

/**
 * Replaces the addresses of the datagram quoted in a parsed ICMP error, with its IP header checksum, its
 * TCP/UDP checksum where the quote holds it, and the ICMP checksum over all of them. Returns false (and
 * changes nothing) when the packet quotes no datagram. Updates `info.innerSrc` and `info.innerDst`.
 */
export function rewriteInnerAddresses(
  buffer: Uint8Array,
  offset: number,
  info: PacketInfo,
  newSrc: number,
  newDst: number,
): boolean {
  if (!info.hasInner) return false;
  const icmpChecksum = offset + info.headerLength + 2;
  const inner = offset + info.innerOffset;
  const delta = addressDelta(info.innerSrc, info.innerDst, newSrc, newDst);
  // Every 16-bit word that changes inside the ICMP message changes the ICMP checksum by its own difference.
  let icmpDelta = delta;
  icmpDelta += replaceWord(buffer, inner + 10, delta);
  const innerL4 = inner + info.innerHeaderLength;
  const quotedL4 = info.innerLength - info.innerHeaderLength;
  if ((read16(buffer, inner + 6) & 0x1fff) === 0) {
    if (info.innerProtocol === PROTOCOL_TCP && quotedL4 >= 18) {
      icmpDelta += replaceWord(buffer, innerL4 + 16, delta);
    } else if (info.innerProtocol === PROTOCOL_UDP && read16(buffer, innerL4 + 6) !== 0) {
      const old = read16(buffer, innerL4 + 6);
      if (adjustChecksum(buffer, innerL4 + 6, delta) === 0) write16(buffer, innerL4 + 6, 0xffff);
      icmpDelta += (~old & 0xffff) + read16(buffer, innerL4 + 6);
    }
  }
  write32(buffer, inner + 12, newSrc);
  write32(buffer, inner + 16, newDst);
  adjustChecksum(buffer, icmpChecksum, fold(icmpDelta));
  info.innerSrc = newSrc;
  info.innerDst = newDst;
  return true;
}

/** Adjusts the checksum word at `at` by `delta`; returns the one's complement difference of that word. */
function replaceWord(buffer: Uint8Array, at: number, delta: number): number {
  const old = read16(buffer, at);
  const updated = adjustChecksum(buffer, at, delta);
  return (~old & 0xffff) + updated;
}
