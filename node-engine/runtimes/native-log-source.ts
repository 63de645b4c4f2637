import type { LogStreamName } from '../../shared/index.js';
import { sleep } from '../../shared/index.js';
import type { FollowedOutput } from './followed-output.js';
import type { LogPiece, LogSource } from './log-source.js';

/** How often followed output files are looked at again when nothing new was in them. */
const POLL_MS = 200;

/**
 * A native workload's output: its stdout and stderr files, read in turn (files carry no timestamps, so the order
 * between the two streams is only as close as the reads). Following ends once the workload stopped and what it
 * wrote last was read.
 */
export class NativeLogSource implements LogSource {
  private next = 0;
  private stoppedSeen = false;
  private readonly closing = new AbortController();

  constructor(
    private readonly outputs: { stream: LogStreamName; output: FollowedOutput }[],
    private readonly follow: boolean,
    /** Whether the workload still runs. */
    private readonly running: () => Promise<boolean>,
  ) {}

  async read(maxBytes: number): Promise<LogPiece | null> {
    while (!this.closing.signal.aborted) {
      for (let turn = 0; turn < this.outputs.length; turn++) {
        const index = (this.next + turn) % this.outputs.length;
        const { stream, output } = this.outputs[index]!;
        const data = await output.readNow(maxBytes);
        if (this.closing.signal.aborted) return null;
        if (data.length > 0) {
          // The other stream first next time: a chatty stdout does not hide stderr.
          this.next = (index + 1) % this.outputs.length;
          return { stream, data };
        }
      }
      if (!this.follow || this.stoppedSeen) return null;
      // Stopped: one more look for what it wrote last, then the end.
      if (!(await this.running())) this.stoppedSeen = true;
      else await sleep(POLL_MS, this.closing.signal);
    }
    return null;
  }

  close(): void {
    this.closing.abort();
    for (const { output } of this.outputs) void output.close();
  }
}
