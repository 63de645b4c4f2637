import { randomBytes } from 'node:crypto';
import { numberToIp } from '../../shared/ipv4.js';
import { OVERLAY_MESSAGE, PROBE_ANSWER_BYTES, PROBE_BYTES } from '../../shared/overlay-wire.js';

/**
 * What this worker's overlay socket looks like from outside: the address and port the cluster manager's
 * rendezvous port saw a probe come from (behind a NAT, the NAT's mapping). Probes go out from the overlay socket
 * itself, so the mapping is the one peers must use. Only an answer that echoes the newest probe's random bytes
 * counts: nobody off the path can make a worker announce an address of their choosing.
 */
export class ReflexiveAddress {
  private nonce: Buffer | null = null;
  private current: { ip: string; port: number } | null = null;

  /** A new probe to send (the answer to any older one no longer counts). */
  probe(): Buffer {
    this.nonce = randomBytes(16);
    const message = Buffer.alloc(PROBE_BYTES);
    message[0] = OVERLAY_MESSAGE.probe;
    this.nonce.copy(message, 4);
    return message;
  }

  /** An answer arrived: true when it is the newest probe's and says something new. */
  answer(message: Buffer, offset: number, length: number): boolean {
    if (length !== PROBE_ANSWER_BYTES || message[offset] !== OVERLAY_MESSAGE.probeAnswer || !this.nonce)
      return false;
    if (!this.nonce.equals(message.subarray(offset + 4, offset + 20))) return false;
    const ip = numberToIp(message.readUInt32BE(offset + 20));
    const port = message.readUInt16BE(offset + 24);
    if (this.current?.ip === ip && this.current.port === port) return false;
    this.current = { ip, port };
    return true;
  }

  get address(): { ip: string; port: number } | null {
    return this.current;
  }
}
