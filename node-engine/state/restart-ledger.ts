import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../shared/atomic-file.js';

const EntrySchema = z.object({
  generation: z.number().int().min(0),
  restarts: z.number().int().min(0),
  consecutiveFailures: z.number().int().min(0),
  /** The exit (its finish time) the restart policy gave up on: a restarted node engine does not decide it again. */
  settledExit: z.number().optional(),
});
export type RestartCount = z.infer<typeof EntrySchema>;
const LedgerFileSchema = z.record(z.string(), EntrySchema);

/**
 * Restart counts per instance, kept in `<data-dir>/restarts.json`, so that `on-failure` with `maxRetries` and
 * the restart back-off hold across a node engine restart instead of starting from zero, and an exit the policy
 * gave up on stays given up.
 */
export class RestartLedger {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly path: string,
    private readonly entries: Map<string, RestartCount>,
  ) {}

  /** A missing or unreadable file starts an empty ledger: counts are a help, not a source of truth. */
  static async load(dataDir: string): Promise<RestartLedger> {
    const path = join(dataDir, 'restarts.json');
    let entries = new Map<string, RestartCount>();
    try {
      const parsed = LedgerFileSchema.safeParse(JSON.parse(await readFile(path, 'utf8')));
      if (parsed.success) entries = new Map(Object.entries(parsed.data));
    } catch {
      // No file yet, or a torn one from before atomic writes: start counting afresh.
    }
    return new RestartLedger(path, entries);
  }

  /** The counts of this instance at this generation (a new generation starts from zero). */
  get(key: string, generation: number): RestartCount | undefined {
    const entry = this.entries.get(key);
    return entry?.generation === generation ? entry : undefined;
  }

  record(key: string, count: RestartCount): Promise<void> {
    this.entries.set(key, count);
    return this.save();
  }

  /** Drops the counts of instances no longer desired here. */
  retain(keys: Set<string>): Promise<void> {
    let changed = false;
    for (const key of this.entries.keys()) {
      if (!keys.has(key)) changed = this.entries.delete(key) || changed;
    }
    return changed ? this.save() : Promise.resolve();
  }

  private save(): Promise<void> {
    const content = JSON.stringify(Object.fromEntries(this.entries));
    const write = this.writing.then(() => writeFileAtomic(this.path, content));
    this.writing = write.catch(() => undefined);
    return write;
  }
}
