import { describe, expect, it } from 'vitest';
import { PacketSizeGuard } from '../../cluster-manager/broker/packet-size-guard.js';

/** An MQTT packet: the type byte, the remaining length as MQTT encodes it, then `body` bytes. */
function packet(type: number, bodyBytes: number): Buffer {
  const length: number[] = [];
  let left = bodyBytes;
  do {
    let byte = left % 128;
    left = Math.floor(left / 128);
    if (left > 0) byte |= 0x80;
    length.push(byte);
  } while (left > 0);
  return Buffer.concat([Buffer.from([type, ...length]), Buffer.alloc(bodyBytes, 7)]);
}

/** Feeds `bytes` in chunks of `size`; the index of the chunk refused, or -1. */
function feed(guard: PacketSizeGuard, bytes: Buffer, size: number): number {
  for (let at = 0, chunk = 0; at < bytes.length; at += size, chunk++)
    if (!guard.accept(bytes.subarray(at, at + size))) return chunk;
  return -1;
}

describe('the MQTT packet size guard', () => {
  const stream = Buffer.concat([packet(0x10, 40), packet(0x30, 200), packet(0xc0, 0), packet(0x30, 16_000)]);

  it('follows packets of every size through chunks of any size, headers split included', () => {
    for (const size of [1, 2, 3, 5, 64, 1000, stream.length]) {
      expect(feed(new PacketSizeGuard(16_010), stream, size)).toBe(-1);
    }
  });

  it('refuses a packet over the limit from its header, before its body arrives', () => {
    const big = packet(0x30, 300_000);
    const guard = new PacketSizeGuard(256 * 1024);
    expect(guard.accept(stream)).toBe(true);
    // The header alone (type and 3 length bytes) is enough to refuse it.
    expect(guard.accept(big.subarray(0, 4))).toBe(false);
    // The limit is the whole packet: header bytes count.
    expect(feed(new PacketSizeGuard(16_003), packet(0x30, 16_000), 7)).toBe(-1);
    expect(feed(new PacketSizeGuard(16_002), packet(0x30, 16_000), 7)).toBe(0);
  });

  it('refuses a remaining length of more than four bytes, and lifts the limit for a trusted login', () => {
    expect(new PacketSizeGuard(1 << 30).accept(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toBe(
      false,
    );
    const guard = new PacketSizeGuard(100);
    guard.lift();
    expect(guard.accept(packet(0x30, 300_000))).toBe(true);
  });
});
