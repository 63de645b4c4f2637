import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../shared/atomic-file.js';
import { ipToNumber, numberToIp, parseCidr } from '../../shared/ipv4.js';
import type { Logger } from '../../shared/logger.js';
import { Ipv4Schema } from '../../shared/net.js';

/** A container joined to the overlay on this worker. */
export const AttachmentSchema = z.object({
  containerId: z.string().min(1),
  pid: z.number().int().positive(),
  /** `<jobId>/<instance>`: the address book's key. */
  key: z.string().min(1),
  namespaceIp: Ipv4Schema,
  instanceIp: Ipv4Schema,
  veth: z.string().min(1),
});
export type Attachment = z.infer<typeof AttachmentSchema>;

const BookFileSchema = z.object({
  subnet: z.string(),
  /** key -> namespace IP */
  addresses: z.record(z.string(), Ipv4Schema),
  /** container id -> attachment */
  attachments: z.record(z.string(), AttachmentSchema),
});
type BookFile = z.infer<typeof BookFileSchema>;

export const ATTACHMENTS_FILE = 'attachments.json';

/** Every namespace IP of the worker's subnet is taken. */
export class SubnetFullError extends Error {
  override name = 'SubnetFullError';
  readonly code = 'subnet_full';
}

/** The key for an instance: the same instance keeps its namespace IP across restarts of either side. */
export function instanceKey(jobId: string, instance: number): string {
  return `${jobId}/${instance}`;
}

/**
 * The namespace IPs of this worker's subnet (`<data-dir>/attachments.json`): network, gateway (.1) and broadcast
 * are never handed out; the lowest free address goes first; an instance keeps its address until released.
 * What is attached now is kept alongside, so a restarted net manager knows which container held which address.
 */
export class AddressBook {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly path: string,
    readonly subnet: string,
    private readonly first: number,
    private readonly last: number,
    private readonly addresses: Map<string, string>,
    private readonly attached: Map<string, Attachment>,
  ) {}

  /**
   * Loads the book for `subnet` (a CIDR block such as `10.18.0.64/26`). A file for another subnet (the node got
   * a new one) is started over; a corrupt or unreadable file is logged, kept as `attachments.json.corrupt-<ms>`
   * and started over too: addresses are re-handed on the next attach either way.
   */
  static async load(dataDir: string, subnet: string, logger?: Logger): Promise<AddressBook> {
    const range = parseCidr(subnet);
    if (range.prefix > 30) throw new Error(`worker subnet ${subnet} is too small for namespace IPs`);
    const canonical = `${numberToIp(range.first)}/${range.prefix}`;
    await mkdir(dataDir, { recursive: true });
    const path = join(dataDir, ATTACHMENTS_FILE);
    const saved = await readBook(path, logger);
    const book = new AddressBook(path, canonical, range.first + 2, range.last - 1, new Map(), new Map());
    if (saved === 'none') return book;
    if (saved === 'bad') {
      await book.saveOrLog(logger);
      return book;
    }
    if (saved.subnet !== canonical) {
      logger?.warn(
        { previous: saved.subnet, subnet: canonical, dropped: Object.keys(saved.addresses).length },
        'worker subnet changed: namespace IPs start over',
      );
      await book.saveOrLog(logger);
      return book;
    }
    const problem = book.adopt(saved);
    if (problem) {
      logger?.error({ path, problem }, 'attachments file is inconsistent: starting empty');
      await keepCopy(path, logger);
      book.addresses.clear();
      book.attached.clear();
      await book.saveOrLog(logger);
    }
    return book;
  }

  /** The namespace IP of `key`, handing out the lowest free one the first time. */
  async allocate(key: string): Promise<string> {
    const known = this.addresses.get(key);
    if (known) return known;
    const taken = new Set(this.addresses.values());
    for (let address = this.first; address <= this.last; address++) {
      const ip = numberToIp(address);
      if (taken.has(ip)) continue;
      this.addresses.set(key, ip);
      try {
        await this.save();
      } catch (error) {
        this.addresses.delete(key);
        throw error;
      }
      return ip;
    }
    throw new SubnetFullError(
      `no free namespace IP in worker subnet ${this.subnet}: all ${this.last - this.first + 1} are in use`,
    );
  }

  /** Frees the address of `key` and forgets its attachments; releasing an unknown key is fine. */
  /** Frees the addresses of these keys (and forgets their attachments), with one write of the file. */
  async release(...keys: string[]): Promise<void> {
    let changed = false;
    for (const key of keys) {
      changed = this.addresses.delete(key) || changed;
      for (const [containerId, attachment] of this.attached) {
        if (attachment.key === key) changed = this.attached.delete(containerId) || changed;
      }
    }
    if (changed) await this.save();
  }

  addressOf(key: string): string | undefined {
    return this.addresses.get(key);
  }

  /** Records a container as attached; its key must hold the address (allocate first). */
  async recordAttachment(attachment: Attachment): Promise<void> {
    const parsed = AttachmentSchema.parse(attachment);
    if (this.addresses.get(parsed.key) !== parsed.namespaceIp) {
      throw new Error(`${parsed.namespaceIp} is not the namespace IP of ${parsed.key}`);
    }
    this.attached.set(parsed.containerId, parsed);
    await this.save();
  }

  /** Forgets an attachment (the container went) and returns it; the key keeps its address until released. */
  async forgetAttachment(containerId: string): Promise<Attachment | undefined> {
    const attachment = this.attached.get(containerId);
    if (!attachment) return undefined;
    this.attached.delete(containerId);
    await this.save();
    return attachment;
  }

  /** Forgets every attachment (their addresses stay allocated), with one write of the file. */
  async forgetAllAttachments(): Promise<Attachment[]> {
    const all = [...this.attached.values()];
    if (all.length === 0) return all;
    this.attached.clear();
    await this.save();
    return all;
  }

  attachment(containerId: string): Attachment | undefined {
    return this.attached.get(containerId);
  }

  attachments(): Attachment[] {
    return [...this.attached.values()];
  }

  /** Checks a saved book against the subnet; returns what is wrong, or undefined when it was taken over. */
  private adopt(saved: BookFile): string | undefined {
    const owners = new Map<string, string>();
    for (const [key, ip] of Object.entries(saved.addresses)) {
      const value = ipToNumber(ip);
      if (value < this.first || value > this.last) return `${key} holds ${ip}, outside ${this.subnet}`;
      const owner = owners.get(ip);
      if (owner) return `${ip} is held by both ${owner} and ${key}`;
      owners.set(ip, key);
      this.addresses.set(key, ip);
    }
    for (const [containerId, attachment] of Object.entries(saved.attachments)) {
      if (
        attachment.containerId !== containerId ||
        saved.addresses[attachment.key] !== attachment.namespaceIp
      ) {
        return `attachment of ${containerId} does not match its address`;
      }
      this.attached.set(containerId, attachment);
    }
    return undefined;
  }

  /** At load time a failed write is not fatal: the next change tries again and fails the call that made it. */
  private async saveOrLog(logger: Logger | undefined): Promise<void> {
    try {
      await this.save();
    } catch (error) {
      logger?.error({ path: this.path, err: error }, 'cannot write the attachments file');
    }
  }

  private save(): Promise<void> {
    const content: BookFile = {
      subnet: this.subnet,
      addresses: Object.fromEntries(this.addresses),
      attachments: Object.fromEntries(this.attached),
    };
    const write = this.writing.then(() =>
      writeFileAtomic(this.path, `${JSON.stringify(content, null, 2)}\n`),
    );
    this.writing = write.catch(() => undefined);
    return write;
  }
}

/** The saved book, `none` when there is none, `bad` when it cannot be used (logged, a copy kept). */
async function readBook(path: string, logger: Logger | undefined): Promise<BookFile | 'none' | 'bad'> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    logger?.error({ path, err: error }, 'cannot read the attachments file: starting empty');
    await keepCopy(path, logger);
    return 'bad';
  }
  let problem: string;
  try {
    const parsed = BookFileSchema.safeParse(JSON.parse(text));
    if (parsed.success) return parsed.data;
    problem = parsed.error.message;
  } catch (error) {
    problem = (error as Error).message;
  }
  logger?.error({ path, problem }, 'attachments file is corrupt: starting empty');
  await keepCopy(path, logger);
  return 'bad';
}

/** Keeps a bad file for a post-mortem before it is overwritten. */
async function keepCopy(path: string, logger: Logger | undefined): Promise<void> {
  const copy = `${path}.corrupt-${Date.now()}`;
  try {
    await copyFile(path, copy);
    logger?.warn({ copy }, 'kept a copy of the bad attachments file');
  } catch (error) {
    logger?.warn({ path, err: error }, 'could not keep a copy of the bad attachments file');
  }
}
