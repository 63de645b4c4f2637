import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';
import { OVERLAY_MESSAGE } from '../../shared/overlay-wire.js';

/**
 * The handshake of the encrypted overlay: Noise IK (Noise_IK_25519_ChaChaPoly_SHA256, as WireGuard uses it with
 * BLAKE2s). The initiator knows the responder's static public key from the cluster manager's route tables; the
 * responder learns the initiator's from the first message and asks the cluster manager whose it is. Two messages
 * give both sides a pair of session keys, forward secret (ephemeral keys on both sides) and bound to both static
 * keys. Pure functions over buffers: the I/O and timers live in peers.ts, the per-packet AEAD in the addon.
 *
 * Initiation (type 1, 133 bytes):
 *   type 1 | 3 zero | sender index (LE) | ephemeral (32) | static, sealed (48) | timestamp + offer, sealed (29) | mac1
 * Response (type 2, 77 bytes):
 *   type 2 | 3 zero | sender index | receiver index | ephemeral (32) | cipher, sealed (17) | mac1 (16)
 * The offer (one byte) says which data ciphers the initiator can run fast (bit 0: AES-256-GCM, i.e. it has AES
 * instructions); the responder picks (AES-256-GCM when both can, else ChaCha20-Poly1305) and says so in the
 * response. Both travel sealed and bound to the handshake hash: nobody on the way can talk the peers down.
 * `mac1` is an HMAC keyed by the receiver's public key: garbage and messages for another key are turned away
 * before any Diffie-Hellman is spent on them. The timestamp (12 bytes, increasing) lets a responder refuse a
 * replayed initiation.
 */

export const INITIATION_BYTES = 133;
export const RESPONSE_BYTES = 77;
/** The data ciphers, as the response names them and the addon takes them. */
export const CIPHERS = ['chacha20-poly1305', 'aes-256-gcm'] as const;
export type Cipher = (typeof CIPHERS)[number];
const OFFER_AES = 1;
export const TYPE_INITIATION = OVERLAY_MESSAGE.initiation;
export const TYPE_RESPONSE = OVERLAY_MESSAGE.response;
export const KEY_BYTES = 32;
const TAG_BYTES = 16;
const TIMESTAMP_BYTES = 12;
const PROTOCOL = Buffer.from('Noise_IK_25519_ChaChaPoly_SHA256');
const PROLOGUE = Buffer.from('edge overlay v1');
const MAC1_LABEL = Buffer.from('mac1----');

export class HandshakeError extends Error {
  override name = 'HandshakeError';
}

/** A static X25519 key pair: the private key as a KeyObject, the public key raw (32 bytes). */
export interface StaticKeys {
  privateKey: KeyObject;
  publicKey: Buffer;
}

/** Session keys from a finished handshake, as this side uses them. */
export interface SessionKeys {
  sendKey: Buffer;
  recvKey: Buffer;
}

export function generateStaticKeys(): StaticKeys {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey: rawPublicKey(publicKey) };
}

/** The key pair of a raw 32-byte X25519 private key. */
export function staticKeysFromPrivate(raw: Buffer): StaticKeys {
  if (raw.length !== KEY_BYTES) throw new HandshakeError('a private key is 32 bytes');
  const privateKey = createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), raw]),
    format: 'der',
    type: 'pkcs8',
  });
  return { privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) };
}

/** The raw 32 bytes of an X25519 private key (to store it). */
export function rawPrivateKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'pkcs8' }).subarray(-KEY_BYTES);
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(-KEY_BYTES);
}

function publicKeyObject(raw: Buffer): KeyObject {
  return createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), raw]),
    format: 'der',
    type: 'spki',
  });
}

function dh(privateKey: KeyObject, publicKey: Buffer): Buffer {
  const shared = diffieHellman({ privateKey, publicKey: publicKeyObject(publicKey) });
  // An all-zero result means a low-order public key: no secret was agreed.
  if (shared.every((byte) => byte === 0)) throw new HandshakeError('a low-order public key');
  return shared;
}

function sha256(...parts: Buffer[]): Buffer {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

function hmac(key: Buffer, ...parts: Buffer[]): Buffer {
  const mac = createHmac('sha256', key);
  for (const part of parts) mac.update(part);
  return mac.digest();
}

/** Noise's HKDF with two outputs. */
function hkdf(chainingKey: Buffer, input: Buffer): [Buffer, Buffer] {
  const secret = hmac(chainingKey, input);
  const first = hmac(secret, Buffer.from([1]));
  const second = hmac(secret, first, Buffer.from([2]));
  return [first, second];
}

function nonce(counter: number): Buffer {
  const bytes = Buffer.alloc(12);
  bytes.writeBigUInt64LE(BigInt(counter), 4);
  return bytes;
}

function seal(key: Buffer, counter: number, ad: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: TAG_BYTES });
  cipher.setAAD(ad, { plaintextLength: plaintext.length });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function open(key: Buffer, counter: number, ad: Buffer, sealed: Buffer): Buffer {
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce(counter), { authTagLength: TAG_BYTES });
  decipher.setAAD(ad, { plaintextLength: sealed.length - TAG_BYTES });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new HandshakeError('a sealed field does not authenticate');
  }
}

/** Noise's SymmetricState: the chaining key, the handshake hash, and the key of the moment. */
class SymmetricState {
  chainingKey: Buffer;
  hash: Buffer;
  private key: Buffer | null = null;
  private counter = 0;

  constructor(responderStatic: Buffer) {
    this.chainingKey = PROTOCOL;
    this.hash = PROTOCOL;
    this.mixHash(PROLOGUE);
    this.mixHash(responderStatic);
  }

  mixHash(data: Buffer): void {
    this.hash = sha256(this.hash, data);
  }

  mixKey(input: Buffer): void {
    const [chainingKey, key] = hkdf(this.chainingKey, input);
    this.chainingKey = chainingKey;
    this.key = key;
    this.counter = 0;
  }

  encryptAndHash(plaintext: Buffer): Buffer {
    if (!this.key) throw new HandshakeError('no key yet');
    const sealed = seal(this.key, this.counter++, this.hash, plaintext);
    this.mixHash(sealed);
    return sealed;
  }

  decryptAndHash(sealed: Buffer): Buffer {
    if (!this.key) throw new HandshakeError('no key yet');
    const plaintext = open(this.key, this.counter++, this.hash, sealed);
    this.mixHash(sealed);
    return plaintext;
  }

  /** The two transport keys: the initiator sends with the first. */
  split(): [Buffer, Buffer] {
    return hkdf(this.chainingKey, Buffer.alloc(0));
  }
}

function mac1Key(receiverStatic: Buffer): Buffer {
  return sha256(MAC1_LABEL, receiverStatic);
}

function writeMac1(message: Buffer, receiverStatic: Buffer): void {
  const at = message.length - TAG_BYTES;
  hmac(mac1Key(receiverStatic), message.subarray(0, at)).copy(message, at, 0, TAG_BYTES);
}

/** Whether the message's mac1 was made for `localStatic` (cheap: no Diffie-Hellman). */
export function mac1Valid(message: Buffer, localStatic: Buffer): boolean {
  const at = message.length - TAG_BYTES;
  const expected = hmac(mac1Key(localStatic), message.subarray(0, at)).subarray(0, TAG_BYTES);
  return timingSafeEqual(expected, message.subarray(at));
}

/** What an initiator keeps between its initiation and the response. */
export interface InitiatorState {
  senderIndex: number;
  remoteStatic: Buffer;
  symmetric: SymmetricState;
  ephemeral: KeyObject;
  local: StaticKeys;
  offeredAes: boolean;
}

/** -> e, es, s, ss: the initiation to `remoteStatic`, carrying `timestamp` (12 bytes) and the cipher offer. */
export function createInitiation(
  local: StaticKeys,
  remoteStatic: Buffer,
  senderIndex: number,
  timestamp: Buffer,
  offerAes = false,
): { message: Buffer; state: InitiatorState } {
  if (timestamp.length !== TIMESTAMP_BYTES) throw new HandshakeError('a timestamp is 12 bytes');
  const symmetric = new SymmetricState(remoteStatic);
  const ephemeral = generateKeyPairSync('x25519');
  const ephemeralPublic = rawPublicKey(ephemeral.publicKey);
  symmetric.mixHash(ephemeralPublic);
  symmetric.mixKey(dh(ephemeral.privateKey, remoteStatic));
  const sealedStatic = symmetric.encryptAndHash(local.publicKey);
  symmetric.mixKey(dh(local.privateKey, remoteStatic));
  const sealedTimestamp = symmetric.encryptAndHash(
    Buffer.concat([timestamp, Buffer.from([offerAes ? OFFER_AES : 0])]),
  );
  const message = Buffer.alloc(INITIATION_BYTES);
  message[0] = TYPE_INITIATION;
  message.writeUInt32LE(senderIndex, 4);
  ephemeralPublic.copy(message, 8);
  sealedStatic.copy(message, 40);
  sealedTimestamp.copy(message, 88);
  writeMac1(message, remoteStatic);
  return {
    message,
    state: {
      senderIndex,
      remoteStatic,
      symmetric,
      ephemeral: ephemeral.privateKey,
      local,
      offeredAes: offerAes,
    },
  };
}

/** What a responder learns from an initiation. */
export interface ReceivedInitiation {
  senderIndex: number;
  remoteStatic: Buffer;
  timestamp: Buffer;
  /** The initiator can run AES-256-GCM fast. */
  offersAes: boolean;
  symmetric: SymmetricState;
  remoteEphemeral: Buffer;
}

/** Reads an initiation made for `local`; throws HandshakeError when it is not one (mac1, a seal, a key). */
export function consumeInitiation(local: StaticKeys, message: Buffer): ReceivedInitiation {
  if (message.length !== INITIATION_BYTES || message[0] !== TYPE_INITIATION)
    throw new HandshakeError('not an initiation');
  if (!mac1Valid(message, local.publicKey)) throw new HandshakeError('mac1 does not match this key');
  const symmetric = new SymmetricState(local.publicKey);
  const remoteEphemeral = Buffer.from(message.subarray(8, 40));
  symmetric.mixHash(remoteEphemeral);
  symmetric.mixKey(dh(local.privateKey, remoteEphemeral));
  const remoteStatic = symmetric.decryptAndHash(message.subarray(40, 88));
  symmetric.mixKey(dh(local.privateKey, remoteStatic));
  const payload = symmetric.decryptAndHash(message.subarray(88, 117));
  return {
    senderIndex: message.readUInt32LE(4),
    remoteStatic,
    timestamp: payload.subarray(0, TIMESTAMP_BYTES),
    offersAes: (payload[TIMESTAMP_BYTES]! & OFFER_AES) !== 0,
    symmetric,
    remoteEphemeral,
  };
}

/** <- e, ee, se: the response with the cipher chosen (AES-256-GCM if both can), and this side's session keys. */
export function createResponse(
  received: ReceivedInitiation,
  senderIndex: number,
  canAes = false,
): { message: Buffer; keys: SessionKeys; cipher: Cipher } {
  const { symmetric } = received;
  const ephemeral = generateKeyPairSync('x25519');
  const ephemeralPublic = rawPublicKey(ephemeral.publicKey);
  symmetric.mixHash(ephemeralPublic);
  symmetric.mixKey(dh(ephemeral.privateKey, received.remoteEphemeral));
  symmetric.mixKey(dh(ephemeral.privateKey, received.remoteStatic));
  const cipher: Cipher = canAes && received.offersAes ? 'aes-256-gcm' : 'chacha20-poly1305';
  const sealedChoice = symmetric.encryptAndHash(Buffer.from([CIPHERS.indexOf(cipher)]));
  const message = Buffer.alloc(RESPONSE_BYTES);
  message[0] = TYPE_RESPONSE;
  message.writeUInt32LE(senderIndex, 4);
  message.writeUInt32LE(received.senderIndex, 8);
  ephemeralPublic.copy(message, 12);
  sealedChoice.copy(message, 44);
  writeMac1(message, received.remoteStatic);
  const [initiatorSends, responderSends] = symmetric.split();
  return { message, keys: { sendKey: responderSends, recvKey: initiatorSends }, cipher };
}

/** The receiver index of a response (which initiation it answers), before anything is checked. */
export function responseReceiver(message: Buffer): number {
  return message.readUInt32LE(8);
}

/** Reads the response to `state`'s initiation: the initiator's session keys and the responder's index. */
export function consumeResponse(
  state: InitiatorState,
  message: Buffer,
): { keys: SessionKeys; remoteIndex: number; cipher: Cipher } {
  if (message.length !== RESPONSE_BYTES || message[0] !== TYPE_RESPONSE)
    throw new HandshakeError('not a response');
  if (message.readUInt32LE(8) !== state.senderIndex) throw new HandshakeError('answers another initiation');
  if (!mac1Valid(message, state.local.publicKey)) throw new HandshakeError('mac1 does not match this key');
  // A copy: a response that fails must leave the state usable for the right one.
  const symmetric = Object.assign(Object.create(SymmetricState.prototype), state.symmetric) as SymmetricState;
  const remoteEphemeral = Buffer.from(message.subarray(12, 44));
  symmetric.mixHash(remoteEphemeral);
  symmetric.mixKey(dh(state.ephemeral, remoteEphemeral));
  symmetric.mixKey(dh(state.local.privateKey, remoteEphemeral));
  const choice = symmetric.decryptAndHash(message.subarray(44, 61))[0]!;
  const cipher = CIPHERS[choice];
  if (cipher === undefined || (cipher === 'aes-256-gcm' && !state.offeredAes))
    throw new HandshakeError('the response picks a cipher that was not offered');
  const [initiatorSends, responderSends] = symmetric.split();
  return {
    keys: { sendKey: initiatorSends, recvKey: responderSends },
    remoteIndex: message.readUInt32LE(4),
    cipher,
  };
}
