import { describe, expect, it } from 'vitest';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  generateStaticKeys,
  HandshakeError,
  rawPrivateKey,
  staticKeysFromPrivate,
} from '../../net-manager/secure/noise.js';

const stamp = (n: number) => {
  const bytes = Buffer.alloc(12);
  bytes.writeUInt32BE(n, 8);
  return bytes;
};

describe('the overlay handshake (Noise IK)', () => {
  it('gives both sides matching session keys and tells the responder who initiated', () => {
    const alice = generateStaticKeys();
    const bob = generateStaticKeys();
    const { message, state } = createInitiation(alice, bob.publicKey, 7, stamp(1));
    expect(message.length).toBe(133);
    const received = consumeInitiation(bob, message);
    expect(received.remoteStatic.equals(alice.publicKey)).toBe(true);
    expect(received.senderIndex).toBe(7);
    expect(received.timestamp.equals(stamp(1))).toBe(true);
    const response = createResponse(received, 9);
    expect(response.message.length).toBe(77);
    const completed = consumeResponse(state, response.message);
    expect(completed.remoteIndex).toBe(9);
    expect(completed.keys.sendKey.equals(response.keys.recvKey)).toBe(true);
    expect(completed.keys.recvKey.equals(response.keys.sendKey)).toBe(true);
    expect(completed.keys.sendKey.equals(completed.keys.recvKey)).toBe(false);
  });

  it('makes new keys every time (ephemeral keys on both sides)', () => {
    const alice = generateStaticKeys();
    const bob = generateStaticKeys();
    const keys = [1, 2].map((n) => {
      const { message, state } = createInitiation(alice, bob.publicKey, n, stamp(n));
      return consumeResponse(state, createResponse(consumeInitiation(bob, message), n).message).keys.sendKey;
    });
    expect(keys[0]!.equals(keys[1]!)).toBe(false);
  });

  it('refuses an initiation made for another key, or with any bit flipped', () => {
    const alice = generateStaticKeys();
    const bob = generateStaticKeys();
    const carol = generateStaticKeys();
    const { message } = createInitiation(alice, bob.publicKey, 1, stamp(1));
    expect(() => consumeInitiation(carol, message)).toThrow(HandshakeError);
    for (const bit of [0, 8 * 8, 8 * 40, 8 * 100, 8 * 120]) {
      const flipped = Buffer.from(message);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(() => consumeInitiation(bob, flipped)).toThrow(HandshakeError);
    }
  });

  it('refuses a response that is not from the responder it was made for, and stays usable for the right one', () => {
    const alice = generateStaticKeys();
    const bob = generateStaticKeys();
    const mallory = generateStaticKeys();
    const { message, state } = createInitiation(alice, bob.publicKey, 3, stamp(1));
    // Mallory answers as if she were Bob: she cannot, without Bob's private key.
    const forged = createInitiation(mallory, bob.publicKey, 3, stamp(1));
    const fake = createResponse(consumeInitiation(bob, forged.message), 5).message;
    expect(() => consumeResponse(state, fake)).toThrow(HandshakeError);
    const real = createResponse(consumeInitiation(bob, message), 5).message;
    expect(consumeResponse(state, real).remoteIndex).toBe(5);
  });

  it('picks AES-256-GCM only when both sides can run it fast, and refuses a response that picks what was not offered', () => {
    const alice = generateStaticKeys();
    const bob = generateStaticKeys();
    const pick = (offer: boolean, canAes: boolean) => {
      const { message, state } = createInitiation(alice, bob.publicKey, 1, stamp(1), offer);
      const response = createResponse(consumeInitiation(bob, message), 2, canAes);
      expect(consumeResponse(state, response.message).cipher).toBe(response.cipher);
      return response.cipher;
    };
    expect(pick(true, true)).toBe('aes-256-gcm');
    expect(pick(true, false)).toBe('chacha20-poly1305');
    expect(pick(false, true)).toBe('chacha20-poly1305');
    // A responder (or anyone who could make one) picking AES for an initiator that did not offer it.
    const { message, state } = createInitiation(alice, bob.publicKey, 1, stamp(1), false);
    const received = consumeInitiation(bob, message);
    const forced = createResponse({ ...received, offersAes: true }, 2, true);
    expect(forced.cipher).toBe('aes-256-gcm');
    expect(() => consumeResponse(state, forced.message)).toThrow(/not offered/);
  });

  it('keeps a key pair across a round trip through its stored form', () => {
    const keys = generateStaticKeys();
    const again = staticKeysFromPrivate(rawPrivateKey(keys.privateKey));
    expect(again.publicKey.equals(keys.publicKey)).toBe(true);
  });
});
