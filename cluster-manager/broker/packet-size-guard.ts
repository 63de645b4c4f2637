/** The largest MQTT packet a client may send before it logged in, and a node ever (fixed header included). */
export const MAX_MQTT_PACKET_BYTES = 256 * 1024;

/**
 * Follows the MQTT packets in a connection's byte stream by their fixed headers alone (a type byte, then the
 * remaining length in 1-4 bytes of 7 bits each) and says when one announces more than `maxBytes` in all. The
 * broker checks every chunk as it is read, before the parser buffers a packet's body: a client that announces
 * 200 MiB in its CONNECT is cut off at its first chunk, before it has logged in.
 */
export class PacketSizeGuard {
  /** Bytes of the current packet's body still to come; 0 between packets. */
  private bodyLeft = 0;
  /** Inside a fixed header: bytes of it read so far (0 before the type byte), and the length decoded so far. */
  private headerRead = 0;
  private length = 0;

  constructor(private maxBytes: number) {}

  /** No limit from now on (a login allowed larger packets: the cluster manager's own). */
  lift(): void {
    this.maxBytes = Number.POSITIVE_INFINITY;
  }

  /** Takes the next chunk of the stream; false once a packet is too large or its length field is malformed. */
  accept(chunk: Uint8Array): boolean {
    if (this.maxBytes === Number.POSITIVE_INFINITY) return true;
    let at = 0;
    while (at < chunk.length) {
      if (this.bodyLeft > 0) {
        const skip = Math.min(this.bodyLeft, chunk.length - at);
        this.bodyLeft -= skip;
        at += skip;
        continue;
      }
      const byte = chunk[at++]!;
      if (this.headerRead === 0) {
        this.headerRead = 1;
        this.length = 0;
        continue;
      }
      // A remaining-length byte: 7 bits of value, the high bit says another follows (at most 4).
      this.length += (byte & 0x7f) * 128 ** (this.headerRead - 1);
      this.headerRead++;
      if (byte & 0x80) {
        if (this.headerRead > 4) return false;
        continue;
      }
      if (this.headerRead + this.length > this.maxBytes) return false;
      this.bodyLeft = this.length;
      this.headerRead = 0;
    }
    return true;
  }
}
