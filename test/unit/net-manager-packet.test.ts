import { describe, expect, it } from 'vitest';
import {
  createPacketInfo,
  internetChecksum,
  ipv4HeaderChecksum,
  PROTOCOL_ICMP,
  PROTOCOL_TCP,
  PROTOCOL_UDP,
  parsePacket,
  rewriteAddresses,
  rewriteDestination,
  rewriteInnerAddresses,
  rewriteSource,
  transportChecksum,
} from '../../net-manager/routing/packet.js';
import { ipToNumber } from '../../shared/ipv4.js';
import { buildPacket } from '../helpers/packets.js';

// --- checksums checked independently, random packets ------------------------------------------------------

/** An independent, naive RFC 1071 checksum (no shared code with the module under test). */
function referenceChecksum(bytes: ArrayLike<number>, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2) sum += bytes[i]! * 256 + (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return 0xffff - sum;
}

/** Every checksum of an unfragmented packet, verified from scratch with the naive implementation. */
function expectValidChecksums(packet: Buffer): void {
  const ipHeader = (packet[0]! & 0x0f) * 4;
  expect(referenceChecksum(packet.subarray(0, ipHeader)), 'IPv4 header checksum').toBe(0);
  const protocol = packet[9]!;
  const segment = packet.subarray(ipHeader, packet.readUInt16BE(2));
  if (protocol === PROTOCOL_ICMP) {
    expect(referenceChecksum(segment), 'ICMP checksum').toBe(0);
    return;
  }
  if (protocol === PROTOCOL_UDP && segment.readUInt16BE(6) === 0) return;
  const pseudo =
    packet.readUInt16BE(12) +
    packet.readUInt16BE(14) +
    packet.readUInt16BE(16) +
    packet.readUInt16BE(18) +
    protocol +
    segment.length;
  expect(referenceChecksum(segment, pseudo), 'TCP/UDP checksum').toBe(0);
}

function randomInt(limit: number): number {
  return Math.floor(Math.random() * limit);
}

function randomAddress(): number {
  return randomInt(0x1_0000_0000);
}

function randomPacket(): Buffer {
  const protocol = [PROTOCOL_TCP, PROTOCOL_UDP, PROTOCOL_ICMP][randomInt(3)]!;
  const payload = new Uint8Array(randomInt(200));
  for (let i = 0; i < payload.length; i++) payload[i] = randomInt(256);
  const dotted = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  return buildPacket({
    protocol,
    src: dotted(randomAddress()),
    dst: dotted(randomAddress()),
    srcPort: randomInt(65_536),
    dstPort: randomInt(65_536),
    identifier: randomInt(65_536),
    ipId: randomInt(65_536),
    payload,
    udpChecksum: Math.random() < 0.8,
    ipOptions: Math.random() < 0.2 ? 4 * (1 + randomInt(10)) : 0,
  });
}

const info = createPacketInfo();

describe('net manager packets: checksums', () => {
  it('computes the IPv4 header checksum of a known header', () => {
    const header = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(ipv4HeaderChecksum(header, 0)).toBe(0xb861);
    header.writeUInt16BE(0xb861, 10);
    expect(ipv4HeaderChecksum(header, 0)).toBe(0xb861);
    expect(internetChecksum(header, 0, 20)).toBe(0);
  });

  it('builds packets whose checksums a naive implementation accepts', () => {
    for (const protocol of [PROTOCOL_TCP, PROTOCOL_UDP, PROTOCOL_ICMP]) {
      const packet = buildPacket({
        protocol,
        src: '10.18.0.2',
        dst: '10.30.0.20',
        payload: Buffer.from('hi!'),
      });
      expectValidChecksums(packet);
    }
  });
});

describe('net manager packets: parsing', () => {
  it('reads a TCP SYN', () => {
    const packet = buildPacket({
      protocol: PROTOCOL_TCP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      srcPort: 45_000,
      dstPort: 8080,
    });
    expect(parsePacket(packet, 0, packet.length, info)).toBeNull();
    expect(info).toMatchObject({
      headerLength: 20,
      totalLength: 44,
      protocol: PROTOCOL_TCP,
      src: ipToNumber('10.18.0.2'),
      dst: ipToNumber('10.30.0.20'),
      srcPort: 45_000,
      dstPort: 8080,
      ipId: 0x1234,
      isFragment: false,
      firstFragment: true,
      moreFragments: false,
      hasInner: false,
    });
  });

  it('reads UDP, ICMP echo identifiers as both ports, IP options and a packet inside a bigger buffer', () => {
    const udp = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.20', srcPort: 5353 });
    expect(parsePacket(udp, 0, udp.length, info)).toBeNull();
    expect([info.protocol, info.srcPort, info.dstPort]).toEqual([PROTOCOL_UDP, 5353, 53]);

    const echo = buildPacket({
      protocol: PROTOCOL_ICMP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      identifier: 777,
    });
    expect(parsePacket(echo, 0, echo.length, info)).toBeNull();
    expect([info.icmpType, info.icmpCode, info.srcPort, info.dstPort]).toEqual([8, 0, 777, 777]);

    const withOptions = buildPacket({
      protocol: PROTOCOL_TCP,
      src: '10.18.0.2',
      dst: '10.30.0.1',
      ipOptions: 12,
    });
    const batch = Buffer.alloc(4096);
    withOptions.copy(batch, 2048);
    expect(parsePacket(batch, 2048, withOptions.length + 100, info)).toBeNull();
    expect([info.headerLength, info.totalLength, info.srcPort, info.dstPort]).toEqual([32, 56, 40_000, 80]);
  });

  it('reads fragments: ports only in the first', () => {
    const packet = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      srcPort: 1000,
    });
    packet.writeUInt16BE(0x2000, 6); // more fragments, offset 0
    packet.writeUInt16BE(0, 10);
    packet.writeUInt16BE(ipv4HeaderChecksum(packet, 0), 10);
    expect(parsePacket(packet, 0, packet.length, info)).toBeNull();
    expect([info.isFragment, info.firstFragment, info.moreFragments, info.srcPort]).toEqual([
      true,
      true,
      true,
      1000,
    ]);

    packet.writeUInt16BE(185, 6); // last fragment at byte 1480
    packet.writeUInt16BE(0, 10);
    packet.writeUInt16BE(ipv4HeaderChecksum(packet, 0), 10);
    expect(parsePacket(packet, 0, packet.length, info)).toBeNull();
    expect([info.isFragment, info.firstFragment, info.moreFragments, info.srcPort, info.dstPort]).toEqual([
      true,
      false,
      false,
      0,
      0,
    ]);
  });

  it('names why a packet is dropped', () => {
    const tcp = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.20' });
    const ipv6 = Buffer.alloc(60);
    ipv6[0] = 0x60;
    expect(parsePacket(ipv6, 0, ipv6.length, info)).toBe('not-ipv4');
    expect(parsePacket(tcp, 0, 0, info)).toBe('truncated');
    expect(parsePacket(tcp, 0, 19, info)).toBe('truncated');
    expect(parsePacket(tcp, 0, tcp.length - 1, info)).toBe('truncated');
    expect(parsePacket(tcp, 10, tcp.length, info)).toBe('truncated'); // runs past the buffer
    expect(parsePacket(tcp, -1, 20, info)).toBe('truncated');

    const shortHeader = Buffer.from(tcp);
    shortHeader[0] = 0x44; // header length 16
    expect(parsePacket(shortHeader, 0, shortHeader.length, info)).toBe('truncated');

    const totalTooSmall = Buffer.from(tcp);
    totalTooSmall.writeUInt16BE(19, 2);
    expect(parsePacket(totalTooSmall, 0, totalTooSmall.length, info)).toBe('truncated');

    const badChecksum = Buffer.from(tcp);
    badChecksum[8] = 1; // TTL changed, checksum not
    expect(parsePacket(badChecksum, 0, badChecksum.length, info)).toBe('bad-header');

    // A TCP header cut off in the first (and only) fragment.
    const cutTcp = Buffer.from(tcp.subarray(0, 30));
    cutTcp.writeUInt16BE(30, 2);
    cutTcp.writeUInt16BE(0, 10);
    cutTcp.writeUInt16BE(ipv4HeaderChecksum(cutTcp, 0), 10);
    expect(parsePacket(cutTcp, 0, cutTcp.length, info)).toBe('truncated');

    const badDataOffset = Buffer.from(tcp);
    badDataOffset[20 + 12] = 0x40; // TCP header length 16
    expect(parsePacket(badDataOffset, 0, badDataOffset.length, info)).toBe('bad-header');

    // Trailing bytes beyond the total length are ignored.
    const padded = Buffer.concat([tcp, Buffer.alloc(30, 0xee)]);
    expect(parsePacket(padded, 0, padded.length, info)).toBeNull();
    expect(info.totalLength).toBe(tcp.length);
  });

  it('never throws on random bytes or on truncations and mutations of valid packets', () => {
    const buffer = Buffer.alloc(2048);
    for (let round = 0; round < 20_000; round++) {
      const length = randomInt(120);
      for (let i = 0; i < length; i++) buffer[i] = randomInt(256);
      if (round % 2 === 0) buffer[0] = 0x40 | randomInt(16); // IPv4 often, to reach deeper checks
      const reason = parsePacket(buffer, 0, length, info);
      expect(reason === null || ['not-ipv4', 'truncated', 'bad-header'].includes(reason)).toBe(true);
    }
    for (let round = 0; round < 3000; round++) {
      const packet = randomPacket();
      const cut = randomInt(packet.length);
      expect(parsePacket(packet, 0, cut, info)).toBe('truncated');
      const mutated = Buffer.from(packet);
      mutated[randomInt(mutated.length)] = randomInt(256);
      if (parsePacket(mutated, 0, mutated.length, info) === null) {
        rewriteAddresses(mutated, 0, info, randomAddress(), randomAddress());
        rewriteInnerAddresses(mutated, 0, info, randomAddress(), randomAddress());
      }
    }
  });
});

describe('net manager packets: rewriting addresses', () => {
  it('rewrites a TCP SYN with correct IP and TCP checksums', () => {
    const packet = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.20' });
    expect(parsePacket(packet, 0, packet.length, info)).toBeNull();
    rewriteAddresses(packet, 0, info, ipToNumber('10.30.0.11'), ipToNumber('10.18.0.66'));
    expect(packet.readUInt32BE(12)).toBe(ipToNumber('10.30.0.11'));
    expect(packet.readUInt32BE(16)).toBe(ipToNumber('10.18.0.66'));
    expect([info.src, info.dst]).toEqual([ipToNumber('10.30.0.11'), ipToNumber('10.18.0.66')]);
    expectValidChecksums(packet);
    const rebuilt = buildPacket({ protocol: PROTOCOL_TCP, src: '10.30.0.11', dst: '10.18.0.66' });
    expect(packet.equals(rebuilt)).toBe(true);
  });

  it('rewrites UDP with a checksum, and leaves a zero (absent) UDP checksum zero', () => {
    const withChecksum = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      payload: Buffer.from('query'),
    });
    parsePacket(withChecksum, 0, withChecksum.length, info);
    rewriteSource(withChecksum, 0, info, ipToNumber('10.30.0.11'));
    rewriteDestination(withChecksum, 0, info, ipToNumber('10.18.0.66'));
    expectValidChecksums(withChecksum);
    expect(withChecksum.readUInt16BE(26)).toBe(transportChecksum(withChecksum, 0));

    const without = buildPacket({
      protocol: PROTOCOL_UDP,
      src: '10.18.0.2',
      dst: '10.30.0.20',
      udpChecksum: false,
    });
    parsePacket(without, 0, without.length, info);
    rewriteAddresses(without, 0, info, ipToNumber('10.30.0.11'), ipToNumber('10.18.0.66'));
    expect(without.readUInt16BE(26)).toBe(0);
    expectValidChecksums(without);
  });

  it('turns a UDP checksum that comes out 0 into 0xffff', () => {
    const packet = buildPacket({ protocol: PROTOCOL_UDP, src: '10.18.0.2', dst: '10.30.0.20' });
    // Pick the new source's low word so that the checksum over the rewritten packet is exactly 0.
    const probe = Buffer.from(packet);
    probe.writeUInt32BE(ipToNumber('10.30.0.0'), 12);
    const lowWord = transportChecksum(probe, 0);
    expect(lowWord).not.toBe(0xffff);
    const newSrc = ipToNumber('10.30.0.0') + lowWord;
    parsePacket(packet, 0, packet.length, info);
    rewriteSource(packet, 0, info, newSrc);
    expect(packet.readUInt16BE(26)).toBe(0xffff);
    expectValidChecksums(packet);
  });

  it('changes only the IP header checksum of ICMP', () => {
    const packet = buildPacket({ protocol: PROTOCOL_ICMP, src: '10.18.0.2', dst: '10.30.0.20' });
    const icmpBefore = Buffer.from(packet.subarray(20));
    parsePacket(packet, 0, packet.length, info);
    rewriteAddresses(packet, 0, info, ipToNumber('10.30.0.11'), ipToNumber('10.18.0.66'));
    expect(packet.subarray(20).equals(icmpBefore)).toBe(true);
    expectValidChecksums(packet);
  });

  it('rewrites only the IP header of a non-first fragment', () => {
    const packet = buildPacket({ protocol: PROTOCOL_TCP, src: '10.18.0.2', dst: '10.30.0.20' });
    packet.writeUInt16BE(100, 6);
    packet.writeUInt16BE(0, 10);
    packet.writeUInt16BE(ipv4HeaderChecksum(packet, 0), 10);
    const payloadBefore = Buffer.from(packet.subarray(20));
    parsePacket(packet, 0, packet.length, info);
    rewriteAddresses(packet, 0, info, ipToNumber('10.30.0.11'), ipToNumber('10.18.0.66'));
    expect(packet.subarray(20).equals(payloadBefore)).toBe(true);
    expect(referenceChecksum(packet.subarray(0, 20))).toBe(0);
  });

  it('keeps every checksum right across random packets and addresses', () => {
    for (let round = 0; round < 3000; round++) {
      const packet = randomPacket();
      const udpWithout = packet[9] === PROTOCOL_UDP && packet.readUInt16BE((packet[0]! & 0x0f) * 4 + 6) === 0;
      expect(parsePacket(packet, 0, packet.length, info)).toBeNull();
      rewriteAddresses(packet, 0, info, randomAddress(), randomAddress());
      expectValidChecksums(packet);
      expect(packet.readUInt16BE(10)).toBe(ipv4HeaderChecksum(packet, 0));
      if (packet[9] !== PROTOCOL_UDP || !udpWithout) {
        const l4 = (packet[0]! & 0x0f) * 4;
        const at = l4 + (packet[9] === PROTOCOL_TCP ? 16 : packet[9] === PROTOCOL_UDP ? 6 : 2);
        expect(packet.readUInt16BE(at)).toBe(transportChecksum(packet, 0));
      }
    }
  });
});

describe('net manager packets: ICMP errors', () => {
  /** A "port unreachable" from `from` quoting `original` (its header and as much as `quote` bytes of it). */
  function portUnreachable(original: Buffer, from: string, to: string, quote: number): Buffer {
    const quoted = original.subarray(0, Math.min(original.length, quote));
    return buildPacket({
      protocol: PROTOCOL_ICMP,
      src: from,
      dst: to,
      icmpType: 3,
      icmpCode: 3,
      payload: quoted,
    });
  }

  it('reads the quoted datagram of a port unreachable', () => {
    const udp = buildPacket({ protocol: PROTOCOL_UDP, src: '10.30.0.11', dst: '10.18.0.66', srcPort: 4000 });
    const error = portUnreachable(udp, '10.18.0.66', '10.30.0.11', 28);
    expect(parsePacket(error, 0, error.length, info)).toBeNull();
    expect(info).toMatchObject({
      icmpType: 3,
      icmpCode: 3,
      srcPort: 0,
      dstPort: 0,
      hasInner: true,
      innerOffset: 28,
      innerHeaderLength: 20,
      innerLength: 28,
      innerProtocol: PROTOCOL_UDP,
      innerSrc: ipToNumber('10.30.0.11'),
      innerDst: ipToNumber('10.18.0.66'),
      innerSrcPort: 4000,
      innerDstPort: 53,
    });

    const tooShort = portUnreachable(udp, '10.18.0.66', '10.30.0.11', 24);
    expect(parsePacket(tooShort, 0, tooShort.length, info)).toBeNull();
    expect(info.hasInner).toBe(false);
    expect(rewriteInnerAddresses(tooShort, 0, info, 1, 2)).toBe(false);
  });

  it('rewrites the quoted addresses with every checksum right (UDP, TCP, ICMP echo, short and whole quotes)', () => {
    const originals = [
      buildPacket({
        protocol: PROTOCOL_UDP,
        src: '10.30.0.11',
        dst: '10.18.0.66',
        payload: Buffer.from('x'),
      }),
      buildPacket({ protocol: PROTOCOL_UDP, src: '10.30.0.11', dst: '10.18.0.66', udpChecksum: false }),
      buildPacket({ protocol: PROTOCOL_TCP, src: '10.30.0.11', dst: '10.18.0.66' }),
      buildPacket({ protocol: PROTOCOL_ICMP, src: '10.30.0.11', dst: '10.18.0.66', identifier: 9 }),
    ];
    for (const original of originals) {
      for (const quote of [28, 1000]) {
        const error = portUnreachable(original, '10.18.0.66', '10.30.0.11', quote);
        expect(parsePacket(error, 0, error.length, info)).toBeNull();
        rewriteAddresses(error, 0, info, ipToNumber('10.30.0.21'), ipToNumber('10.18.0.2'));
        expect(rewriteInnerAddresses(error, 0, info, ipToNumber('10.18.0.2'), ipToNumber('10.30.0.21'))).toBe(
          true,
        );
        expectValidChecksums(error);
        const inner = error.subarray(28);
        expect(inner.readUInt32BE(12)).toBe(ipToNumber('10.18.0.2'));
        expect(inner.readUInt32BE(16)).toBe(ipToNumber('10.30.0.21'));
        expect(referenceChecksum(inner.subarray(0, 20)), 'quoted IP header').toBe(0);
        if (quote >= original.length) expectValidChecksums(Buffer.from(inner));
      }
    }
  });
});
