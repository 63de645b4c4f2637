/**
 * The encrypted overlay's data messages through the real addon, on loopback in this process: two UDP endpoints
 * with keys installed as a handshake would, and a plain socket in between that captures sealed datagrams and
 * plays them back as a stranger, a replayer or a line that flips bits would.
 */

import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import {
  PROMOTED,
  SEALED_HEADER,
  SEALED_HEADROOM,
  SEALED_TAG,
  UdpEndpoint,
} from '../../net-manager/tunnel.js';
import { ipToNumber } from '../../shared/ipv4.js';
import { waitFor } from '../helpers/wait.js';

const LOOPBACK = ipToNumber('127.0.0.1');
const SLOT = 2048;
const BATCH = 16;

interface Received {
  packets: { data: Buffer; peer: number; promoted: boolean; handshake: boolean }[];
}

function receiver(udp: UdpEndpoint): Received & { drain(): void } {
  const buffer = Buffer.alloc(SLOT * BATCH);
  const lengths = new Int32Array(BATCH);
  const addresses = new Uint32Array(BATCH);
  const ports = new Uint16Array(BATCH);
  const peers = new Int32Array(BATCH);
  const received: Received['packets'] = [];
  const drain = () => {
    for (;;) {
      const count = udp.recvOpen(buffer, SLOT, lengths, addresses, ports, peers);
      for (let i = 0; i < count; i++) {
        const handshake = peers[i] === -1;
        const start = i * SLOT + (handshake ? 0 : SEALED_HEADER);
        received.push({
          data: Buffer.from(buffer.subarray(start, start + lengths[i]!)),
          peer: handshake ? -1 : peers[i]! & ~PROMOTED,
          promoted: !handshake && (peers[i]! & PROMOTED) !== 0,
          handshake,
        });
      }
      if (count < BATCH) return;
    }
  };
  udp.onReadable(() => drain());
  return { packets: received, drain };
}

function sealAndSend(udp: UdpEndpoint, slot: number, payloads: Buffer[]): number {
  const buffer = Buffer.alloc(SLOT * payloads.length);
  const offsets = new Int32Array(payloads.length);
  const lengths = new Int32Array(payloads.length);
  const peers = new Int32Array(payloads.length);
  payloads.forEach((payload, i) => {
    offsets[i] = i * SLOT + SEALED_HEADROOM;
    lengths[i] = payload.length;
    peers[i] = slot;
    payload.copy(buffer, offsets[i]!);
  });
  return udp.sendSealed(buffer, offsets, lengths, peers, payloads.length);
}

describe('sealed data messages (addon, loopback)', () => {
  const open: (UdpEndpoint | Socket)[] = [];
  afterEach(() => {
    for (const thing of open.splice(0)) thing.close();
  });

  function endpoint(): UdpEndpoint {
    const udp = UdpEndpoint.bind('127.0.0.1', 0);
    udp.secure(true);
    open.push(udp);
    return udp;
  }

  async function tap(): Promise<{ socket: Socket; port: number; captured: Buffer[] }> {
    const socket = createSocket('udp4');
    open.push(socket);
    const captured: Buffer[] = [];
    socket.on('message', (message) => captured.push(message));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return { socket, port: socket.address().port, captured };
  }

  function send(socket: Socket, message: Buffer, port: number): Promise<void> {
    return new Promise((resolve, reject) =>
      socket.send(message, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
    );
  }

  /** Alice (slot 3 at Bob) and Bob (slot 5 at Alice) with one session, as a finished handshake leaves them. */
  function pair(
    aliceToBob = randomBytes(32),
    bobToAlice = randomBytes(32),
    cipher: 'chacha20-poly1305' | 'aes-256-gcm' = 'chacha20-poly1305',
    bobsCipher = cipher,
  ) {
    const alice = endpoint();
    const bob = endpoint();
    alice.setPeer(5, LOOPBACK, bob.port);
    bob.setPeer(3, LOOPBACK, alice.port);
    expect(alice.addSession(5, 100, 200, aliceToBob, bobToAlice, 'current', cipher)).toBe(true);
    expect(bob.addSession(3, 200, 100, bobToAlice, aliceToBob, 'current', bobsCipher)).toBe(true);
    return { alice, bob };
  }

  it('carries packets sealed with AES-256-GCM as well; a session whose ends disagree on the cipher opens nothing', async () => {
    const aes = pair(undefined, undefined, 'aes-256-gcm');
    const atBob = receiver(aes.bob);
    expect(sealAndSend(aes.alice, 5, [Buffer.from('over AES-GCM'), Buffer.alloc(1400, 3)])).toBe(2);
    await waitFor(() => atBob.packets.length === 2, 'the AES-GCM datagrams');
    expect(atBob.packets[0]!.data.toString()).toBe('over AES-GCM');
    expect(atBob.packets[1]!.data.equals(Buffer.alloc(1400, 3))).toBe(true);
    const mixed = pair(undefined, undefined, 'aes-256-gcm', 'chacha20-poly1305');
    const atMixedBob = receiver(mixed.bob);
    sealAndSend(mixed.alice, 5, [Buffer.from('x')]);
    await waitFor(() => mixed.bob.stats().badTag === 1, 'the mismatched packet refused');
    expect(atMixedBob.packets).toEqual([]);
  });

  it('carries packets sealed by one side to the other, 32 bytes longer on the wire, and nothing in clear', async () => {
    const { alice, bob } = pair();
    const wire = await tap();
    const atBob = receiver(bob);
    const secret = Buffer.from('a packet nobody on the way may read or change');
    expect(sealAndSend(alice, 5, [secret, Buffer.alloc(1400, 7)])).toBe(2);
    await waitFor(() => atBob.packets.length === 2, 'the datagrams');
    expect(atBob.packets[0]).toMatchObject({ peer: 3, handshake: false });
    expect(atBob.packets[0]!.data.equals(secret)).toBe(true);
    expect(atBob.packets[1]!.data.equals(Buffer.alloc(1400, 7))).toBe(true);
    // What crosses the wire: Alice's packets to the tap instead of Bob.
    alice.setPeer(5, LOOPBACK, wire.port);
    sealAndSend(alice, 5, [secret]);
    await waitFor(() => wire.captured.length === 1, 'the datagrams');
    const datagram = wire.captured[0]!;
    expect(datagram.length).toBe(secret.length + SEALED_HEADER + SEALED_TAG);
    expect(datagram[0]).toBe(4);
    expect(datagram.readUInt32LE(4)).toBe(200);
    expect(datagram.includes(Buffer.from('nobody'))).toBe(false);
    expect(alice.stats().sealed).toBe(3);
  });

  it('drops strangers, replays, flipped bits and plain packets, counts each, and delivers nothing of them', async () => {
    const { alice, bob } = pair();
    const wire = await tap();
    const atBob = receiver(bob);
    alice.setPeer(5, LOOPBACK, wire.port);
    sealAndSend(alice, 5, [Buffer.from('first'), Buffer.from('second')]);
    await waitFor(() => wire.captured.length === 2, 'the datagrams');
    const [first, second] = wire.captured as [Buffer, Buffer];

    // Played back once: delivered (from the tap's address: Bob's peer follows it, it authenticated).
    await send(wire.socket, first, bob.port);
    await waitFor(() => atBob.packets.length === 1, 'the datagrams');
    expect(atBob.packets[0]!.data.toString()).toBe('first');
    expect(bob.peer(3)).toMatchObject({ address: LOOPBACK, port: wire.port, roams: 1 });

    await send(wire.socket, first, bob.port); // replayed
    const flipped = Buffer.from(second);
    flipped[flipped.length - 20]! ^= 0x01; // a bit of the ciphertext
    await send(wire.socket, flipped, bob.port);
    const wrongIndex = Buffer.from(second);
    wrongIndex.writeUInt32LE(999, 4); // a stranger's receiver index
    await send(wire.socket, wrongIndex, bob.port);
    const forged = Buffer.concat([second.subarray(0, 16), randomBytes(second.length - 16)]); // right index, no key
    await send(wire.socket, forged, bob.port);
    const plain = Buffer.alloc(40);
    plain[0] = 0x45; // an IPv4 packet in clear
    await send(wire.socket, plain, bob.port);
    await send(wire.socket, Buffer.from([9, 0, 0, 0]), bob.port); // no such type
    await waitFor(() => {
      const stats = bob.stats();
      return (
        (stats.replayed ?? 0) +
          (stats.badTag ?? 0) +
          (stats.unknownSession ?? 0) +
          (stats.plaintext ?? 0) +
          (stats.unknownType ?? 0) >=
        6
      );
    }, 'six drops counted');
    expect(bob.stats()).toMatchObject({
      replayed: 1,
      badTag: 2,
      unknownSession: 1,
      plaintext: 1,
      unknownType: 1,
      opened: 1,
    });
    // The untouched second one still goes through (the window keeps counters it has not seen), once.
    await send(wire.socket, second, bob.port);
    await send(wire.socket, second, bob.port);
    await waitFor(() => bob.stats().replayed === 2, 'the datagrams');
    expect(atBob.packets.map((packet) => packet.data.toString())).toEqual(['first', 'second']);
  });

  it('confirms an answered session with its first packet, then seals with it; the old one still opens', async () => {
    const oldAliceToBob = randomBytes(32);
    const oldBobToAlice = randomBytes(32);
    const { alice, bob } = pair(oldAliceToBob, oldBobToAlice);
    const atAlice = receiver(alice);
    const atBob = receiver(bob);
    // Alice initiated a new handshake, Bob answered: Bob holds it as `next`, Alice as `current`.
    const newAliceToBob = randomBytes(32);
    const newBobToAlice = randomBytes(32);
    expect(bob.addSession(3, 201, 101, newBobToAlice, newAliceToBob, 'next')).toBe(true);
    expect(alice.addSession(5, 101, 201, newAliceToBob, newBobToAlice, 'current')).toBe(true);
    expect(alice.addSession(5, 101, 201, newAliceToBob, newBobToAlice, 'current')).toBe(false); // index taken
    // Bob still seals with the old session until Alice's first packet with the new one arrives.
    sealAndSend(bob, 3, [Buffer.from('old keys')]);
    await waitFor(() => atAlice.packets.length === 1, 'the datagrams');
    expect(atAlice.packets[0]!.data.toString()).toBe('old keys');
    expect(bob.peer(3)).toMatchObject({ current: 200, next: 201 });
    // An empty packet (a keepalive) is enough to confirm.
    sealAndSend(alice, 5, [Buffer.alloc(0)]);
    await waitFor(() => atBob.packets.length === 1, 'the datagrams');
    expect(atBob.packets[0]).toMatchObject({ promoted: true, peer: 3 });
    expect(atBob.packets[0]!.data.length).toBe(0);
    expect(bob.peer(3)).toMatchObject({ current: 201, next: 0, previous: 200 });
    sealAndSend(bob, 3, [Buffer.from('new keys')]);
    await waitFor(() => atAlice.packets.length === 2, 'the datagrams');
    expect(atAlice.packets[1]!.data.toString()).toBe('new keys');
    expect(bob.stats()).toMatchObject({ keepalives: 1, promoted: 1 });
  });

  it('sends through the relay while the peer is reached there, takes relayed packets only from the relay, and leaves it on a direct packet', async () => {
    const { alice, bob } = pair();
    const relay = await tap();
    const elsewhere = await tap();
    const atBob = receiver(bob);
    const bobsId = Buffer.from('b0b0b0b0b0b0b0b0', 'hex');
    const alicesId = Buffer.from('a1a1a1a1a1a1a1a1', 'hex');
    expect(alice.setRelay(5, LOOPBACK, relay.port, bobsId, true)).toBe(true);
    expect(bob.setRelay(3, LOOPBACK, relay.port, alicesId, false)).toBe(true);
    sealAndSend(alice, 5, [Buffer.from('through the relay')]);
    await waitFor(() => relay.captured.length === 1, 'the message at the relay');
    const toRelay = relay.captured[0]!;
    expect(toRelay[0]).toBe(7);
    expect(toRelay.subarray(4, 12).equals(bobsId)).toBe(true);
    expect(toRelay[12]).toBe(4); // the sealed data message behind the relay's header
    expect(alice.stats().relayedOut).toBe(1);
    // The relay passes it on as type 8 with the sender's id; from anywhere else the same is refused.
    const relayed = Buffer.concat([Buffer.from([8, 0, 0, 0]), alicesId, toRelay.subarray(12)]);
    await send(elsewhere.socket, relayed, bob.port);
    await waitFor(() => bob.stats().notFromRelay === 1, 'the relayed packet from elsewhere refused');
    await send(relay.socket, relayed, bob.port);
    await waitFor(() => atBob.packets.length === 1, 'the relayed packet');
    expect(atBob.packets[0]!.data.toString()).toBe('through the relay');
    expect(bob.peer(3)).toMatchObject({ viaRelay: true });
    // Bob now answers through the relay too; a direct packet from Alice moves him off it.
    sealAndSend(bob, 3, [Buffer.from('answer')]);
    await waitFor(() => relay.captured.length === 2, "Bob's answer at the relay");
    expect(relay.captured[1]!.subarray(4, 12).equals(alicesId)).toBe(true);
    alice.setPeer(5, LOOPBACK, bob.port);
    sealAndSend(alice, 5, [Buffer.from('direct again')]);
    await waitFor(() => atBob.packets.length === 2, 'the direct packet');
    expect(bob.peer(3)).toMatchObject({ viaRelay: false, address: LOOPBACK, port: alice.port });
  });

  it('keeps opening what the other side seals after two handshakes crossed and a third one followed', async () => {
    const key = () => randomBytes(32);
    const [s0ab, s0ba, h1ab, h1ba, h2ab, h2ba, h3ab, h3ba] = [
      key(),
      key(),
      key(),
      key(),
      key(),
      key(),
      key(),
      key(),
    ];
    const { alice, bob } = pair(s0ab, s0ba);
    const atAlice = receiver(alice);
    const atBob = receiver(bob);
    // Both initiated at once: Alice's handshake (1) and Bob's (2) each completed on its initiator, and each side
    // holds the other's as `next`.
    alice.addSession(5, 101, 201, h1ab, h1ba, 'current');
    bob.addSession(3, 201, 101, h1ba, h1ab, 'next');
    bob.addSession(3, 202, 102, h2ba, h2ab, 'current');
    alice.addSession(5, 102, 202, h2ab, h2ba, 'next');
    // Each side's first packet promotes the other's `next`: Alice now seals with 2, Bob with 1.
    sealAndSend(alice, 5, [Buffer.from('a1')]);
    sealAndSend(bob, 3, [Buffer.from('b2')]);
    await waitFor(() => atAlice.packets.length === 1 && atBob.packets.length === 1, 'the crossing packets');
    expect(alice.peer(5)).toMatchObject({ current: 102 });
    expect(bob.peer(3)).toMatchObject({ current: 201 });
    // Alice initiates a third; until Bob sees a packet of it he seals with 1, which Alice still opens.
    alice.addSession(5, 103, 203, h3ab, h3ba, 'current');
    bob.addSession(3, 203, 103, h3ba, h3ab, 'next');
    sealAndSend(bob, 3, [Buffer.from('still 1')]);
    await waitFor(() => atAlice.packets.length === 2, 'the packet sealed with an older session');
    expect(atAlice.packets[1]!.data.toString()).toBe('still 1');
    expect(alice.stats().unknownSession ?? 0).toBe(0);
  });

  it('seals nothing for a peer without a session, hands handshake messages up, and checks its arguments', async () => {
    const alice = endpoint();
    const bob = endpoint();
    const atBob = receiver(bob);
    alice.setPeer(1, LOOPBACK, bob.port);
    expect(sealAndSend(alice, 1, [Buffer.from('x')])).toBe(0);
    expect(sealAndSend(alice, 2, [Buffer.from('x')])).toBe(0); // no such peer
    expect(alice.stats().noSession).toBe(2);
    const initiation = Buffer.alloc(133);
    initiation[0] = 1;
    const socket = (await tap()).socket;
    await send(socket, initiation, bob.port);
    await send(socket, Buffer.alloc(100, 1), bob.port); // type 1, wrong size
    await waitFor(() => atBob.packets.length === 1 && bob.stats().badLength === 1, 'the datagrams');
    expect(atBob.packets[0]).toMatchObject({ handshake: true, peer: -1 });
    expect(atBob.packets[0]!.data.equals(initiation)).toBe(true);
    // No room for the header before the packet: refused before anything is sent.
    expect(() =>
      alice.sendSealed(Buffer.alloc(64), new Int32Array([0]), new Int32Array([8]), new Int32Array([1]), 1),
    ).toThrow(RangeError);
    expect(() => alice.addSession(1, 5, 6, Buffer.alloc(16), Buffer.alloc(32), 'current')).toThrow(
      RangeError,
    );
    const plainUdp = UdpEndpoint.bind('127.0.0.1', 0);
    open.push(plainUdp);
    expect(() => plainUdp.setPeer(1, LOOPBACK, 1)).toThrow(/encryption is off/);
  });
});
