import type { LogStreamName } from '../../shared/index.js';
import type { LogPiece } from './log-source.js';

/**
 * Docker multiplexes stdout and stderr of a container without a TTY into frames with an 8-byte header (stream
 * type, 3 zero bytes, big-endian payload length). This splits them as bytes arrive, in pieces of whatever
 * payload is there: nothing but a partial header is held, however long a frame. A stream that does not start
 * with such a header (a container with a TTY) is passed on as stdout.
 */
export class DockerFrameDecoder {
  private header = Buffer.alloc(0);
  /** The stream of the frame being read, and how many of its bytes are still to come. */
  private current: LogStreamName = 'stdout';
  private remaining = 0;
  private raw = false;

  push(chunk: Buffer): LogPiece[] {
    if (this.raw) return chunk.length > 0 ? [{ stream: 'stdout', data: chunk }] : [];
    const pieces: LogPiece[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.remaining === 0) {
        const wanted = 8 - this.header.length;
        this.header = Buffer.concat([this.header, chunk.subarray(offset, offset + wanted)]);
        offset += Math.min(wanted, chunk.length - offset);
        if (this.header.length < 8) break;
        const type = this.header[0];
        if (type !== 0 && type !== 1 && type !== 2) {
          this.raw = true;
          pieces.push({ stream: 'stdout', data: Buffer.concat([this.header, chunk.subarray(offset)]) });
          return pieces;
        }
        this.current = type === 2 ? 'stderr' : 'stdout';
        this.remaining = this.header.readUInt32BE(4);
        this.header = Buffer.alloc(0);
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - offset);
      pieces.push({ stream: this.current, data: chunk.subarray(offset, offset + take) });
      this.remaining -= take;
      offset += take;
    }
    return pieces;
  }
}

/** The payloads of a whole multiplexed buffer, joined in order (stdout and stderr alike). */
export function demuxDockerLogs(buffer: Buffer): string {
  const pieces = new DockerFrameDecoder().push(buffer);
  return Buffer.concat(pieces.map((piece) => piece.data)).toString('utf8');
}
