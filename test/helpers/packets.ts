import {
  ipv4HeaderChecksum,
  PROTOCOL_TCP,
  PROTOCOL_UDP,
  transportChecksum,
} from '../../net-manager/routing/packet.js';
import { ipToNumber } from '../../shared/ipv4.js';

export interface PacketSpec {
  protocol: number;
  src: string;
  dst: string;
  /** TCP/UDP ports; defaults 40000 -> 80 (TCP) or 40000 -> 53 (UDP). */
  srcPort?: number;
  dstPort?: number;
  /** Bytes after the transport header; for an ICMP error, the quoted datagram. */
  payload?: Uint8Array;
  /** UDP only: false sends no checksum (0). */
  udpChecksum?: boolean;
  /** Default 8 (echo request). */
  icmpType?: number;
  icmpCode?: number;
  /** ICMP query identifier (not written for ICMP errors, whose bytes 4-7 stay 0). */
  identifier?: number;
  ipId?: number;
  /** Bytes of IP options (a multiple of 4, filled with NOPs and an end). */
  ipOptions?: number;
  /** [more fragments, offset in 8-byte units]; without it the packet is unfragmented with don't fragment set. */
  fragment?: [moreFragments: boolean, offset: number];
}

/** ICMP types that quote an offending datagram instead of carrying an identifier and sequence number. */
const ICMP_ERROR_TYPES = new Set([3, 4, 5, 11, 12]);

/**
 * Real wire bytes: an IPv4 header with a correct checksum, then a TCP SYN (with an MSS option), a UDP datagram
 * or an ICMP message, its checksum computed over the whole segment as if unfragmented.
 */
export function buildPacket(spec: PacketSpec): Buffer {
  const payload = spec.payload ?? new Uint8Array(0);
  const ipHeader = 20 + (spec.ipOptions ?? 0);
  const l4Header = spec.protocol === PROTOCOL_TCP ? 24 : 8;
  const total = ipHeader + l4Header + payload.length;
  const packet = Buffer.alloc(total);
  packet[0] = 0x40 | (ipHeader / 4);
  packet.writeUInt16BE(total, 2);
  packet.writeUInt16BE(spec.ipId ?? 0x1234, 4);
  const fragment = spec.fragment;
  packet.writeUInt16BE(fragment ? (fragment[0] ? 0x2000 : 0) | fragment[1] : 0x4000, 6);
  packet[8] = 64;
  packet[9] = spec.protocol;
  packet.writeUInt32BE(ipToNumber(spec.src), 12);
  packet.writeUInt32BE(ipToNumber(spec.dst), 16);
  if (ipHeader > 20) {
    packet.fill(1, 20, ipHeader - 1);
    packet[ipHeader - 1] = 0;
  }
  packet.writeUInt16BE(ipv4HeaderChecksum(packet, 0), 10);
  const l4 = ipHeader;
  if (spec.protocol === PROTOCOL_TCP) {
    packet.writeUInt16BE(spec.srcPort ?? 40_000, l4);
    packet.writeUInt16BE(spec.dstPort ?? 80, l4 + 2);
    packet.writeUInt32BE(0x01020304, l4 + 4); // sequence number
    packet[l4 + 12] = (24 / 4) << 4;
    packet[l4 + 13] = 0x02; // SYN
    packet.writeUInt16BE(64_240, l4 + 14);
    packet.set([2, 4, 0x05, 0xb4], l4 + 20); // MSS 1460
  } else if (spec.protocol === PROTOCOL_UDP) {
    packet.writeUInt16BE(spec.srcPort ?? 40_000, l4);
    packet.writeUInt16BE(spec.dstPort ?? 53, l4 + 2);
    packet.writeUInt16BE(8 + payload.length, l4 + 4);
  } else {
    packet[l4] = spec.icmpType ?? 8;
    packet[l4 + 1] = spec.icmpCode ?? 0;
    if (!ICMP_ERROR_TYPES.has(packet[l4]!)) {
      packet.writeUInt16BE(spec.identifier ?? 0x4242, l4 + 4);
      packet.writeUInt16BE(1, l4 + 6); // sequence number
    }
  }
  packet.set(payload, l4 + l4Header);
  const checksumAt = spec.protocol === PROTOCOL_TCP ? 16 : spec.protocol === PROTOCOL_UDP ? 6 : 2;
  if (spec.protocol !== PROTOCOL_UDP || spec.udpChecksum !== false) {
    packet.writeUInt16BE(transportChecksum(packet, 0), l4 + checksumAt);
  }
  return packet;
}
