import type { LogStreamChoice, LogStreamName } from '../../shared/index.js';

/** What a reader asks of a workload's output. */
export interface LogReadOptions {
  /** Go on reading what the workload writes, until it stops. */
  follow: boolean;
  /** The last lines only; undefined: everything kept. */
  tail?: number;
  /** Output from this time on (epoch ms by this machine's clock); undefined: from the start. */
  since?: number;
  streams: LogStreamChoice;
}

/** Bytes of one of a workload's streams, as read. */
export interface LogPiece {
  stream: LogStreamName;
  data: Buffer;
}

/**
 * A workload's output, pulled: nothing is read from Docker or the files beyond what `read` asks for (and a
 * socket's own small buffer), so a reader that stops asking stops the reading.
 */
export interface LogSource {
  /**
   * The next output of one stream, at most `maxBytes`; null at the end (all of it was read and the reader does
   * not follow, or the workload stopped, or the source was closed). Throws when the output cannot be read.
   */
  read(maxBytes: number): Promise<LogPiece | null>;
  /** Stops reading and lets go of what it holds; a `read` waiting resolves to null. */
  close(): void;
}
