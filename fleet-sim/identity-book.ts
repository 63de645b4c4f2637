import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../shared/atomic-file.js';

const IdentitySchema = z.object({ nodeId: z.string().min(1), nodeSecret: z.string().min(1) });
export type Identity = z.infer<typeof IdentitySchema>;
const IdentityFileSchema = z.record(z.string(), IdentitySchema);

/** How often changed identities reach the file, at most. */
const SAVE_EVERY_MS = 5000;

export class IdentityFileError extends Error {
  override name = 'IdentityFileError';
}

/**
 * The workers' node ids and secrets by name, in one JSON file: a simulator started again comes back as the
 * same nodes, as a node engine does with the identity in its data dir. Without a file they live in memory.
 */
export class IdentityBook {
  private readonly identities = new Map<string, Identity>();
  private dirty = false;
  private savedAt = 0;
  private saving: Promise<void> | undefined;
  /** Told about failed writes (the fleet counts them). */
  onError: ((error: Error) => void) | undefined;

  private constructor(readonly path: string | undefined) {}

  static async load(path: string | undefined): Promise<IdentityBook> {
    const book = new IdentityBook(path);
    if (!path) return book;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return book;
      throw new IdentityFileError(`--identities: cannot read ${path}: ${(error as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new IdentityFileError(`--identities: ${path} is not JSON`);
    }
    const parsed = IdentityFileSchema.safeParse(json);
    if (!parsed.success) {
      throw new IdentityFileError(`--identities: ${path} is not a map of name -> {nodeId, nodeSecret}`);
    }
    for (const [name, identity] of Object.entries(parsed.data)) book.identities.set(name, identity);
    return book;
  }

  get(name: string): Identity | undefined {
    return this.identities.get(name);
  }

  set(name: string, identity: Identity): void {
    const known = this.identities.get(name);
    if (known?.nodeId === identity.nodeId && known.nodeSecret === identity.nodeSecret) return;
    this.identities.set(name, identity);
    this.dirty = true;
  }

  /** Writes the file when something changed and the last write is old enough (call it often). */
  saveSoon(now: number): void {
    if (this.dirty && !this.saving && now - this.savedAt >= SAVE_EVERY_MS) void this.save(now);
  }

  /** Writes what changed now; a failed write is tried again on the next save. */
  async save(now = Date.now()): Promise<void> {
    await this.saving;
    if (!this.dirty || !this.path) return;
    this.dirty = false;
    this.savedAt = now;
    const content = JSON.stringify(Object.fromEntries(this.identities));
    this.saving = writeFileAtomic(this.path, content).catch((error: Error) => {
      this.dirty = true;
      this.onError?.(error);
    });
    await this.saving;
    this.saving = undefined;
  }
}
