import { createHash } from 'node:crypto';

/**
 * The first byte of every overlay UDP message (net-manager/native/secure.h has the same, for the addon): a
 * handshake's two messages, sealed data, the rendezvous port's probe and answer, a message to the relay and one
 * the relay passed on. An unencrypted overlay's packets start with an IPv4 header instead (0x45 ...).
 */
export const OVERLAY_MESSAGE = {
  initiation: 1,
  response: 2,
  data: 4,
  probe: 5,
  probeAnswer: 6,
  toRelay: 7,
  relayed: 8,
} as const;

/** A probe: its type, 3 zero bytes, 16 bytes the prober chose. */
export const PROBE_BYTES = 20;
/** The answer: its type, 3 zero bytes, the probe's 16 bytes, the address (4) and port (2) the probe came from. */
export const PROBE_ANSWER_BYTES = 26;
/** In front of a relayed message: its type, 3 zero bytes, a relay id (the receiver's going in, the sender's out). */
export const RELAY_HEADER_BYTES = 12;

/** A worker's id at the relay: the first 8 bytes of SHA-256 of its overlay public key (32 raw bytes). */
export function relayId(publicKey: Buffer): Buffer {
  return createHash('sha256').update(publicKey).digest().subarray(0, 8);
}
