import { type FileHandle, open, readdir, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { type OutputSegment, tailStart } from './tail-start.js';

/** Part of an older file still to be read: from `position` to `end`. */
interface Backlog {
  file: FileHandle;
  position: number;
  end: number;
}

/**
 * One output file of a native workload (`stdout.log`), read from where a reader asked (everything kept, its
 * last lines, or what was written since a time) and followed as it grows, across rotations: log-limits.ts
 * rotates by copy and truncate (`stdout.log` is copied to `stdout.log.1`, the older copies shift up, and the file
 * is truncated in place). Rotated copies are opened when this opens, so renaming them does not move what is read;
 * a new `.1` (another inode) means the file rotated: what this had not read yet of it is read from the copies.
 */
export class FollowedOutput {
  private readonly follow: boolean;
  private readonly backlog: Backlog[];
  private current: FileHandle | undefined;
  private position: number;
  /** The inode of `<path>.1` when last looked at: another one means the file rotated. */
  private rotatedInode: number | undefined;
  private closed = false;

  private constructor(
    private readonly path: string,
    state: {
      follow: boolean;
      backlog: Backlog[];
      current: FileHandle | undefined;
      position: number;
      rotatedInode?: number;
    },
  ) {
    this.follow = state.follow;
    this.backlog = state.backlog;
    this.current = state.current;
    this.position = state.position;
    this.rotatedInode = state.rotatedInode;
  }

  /**
   * Opens `path` and its rotated copies (`path.1`, `path.2`...). `since` (epoch ms): files last written before it
   * are skipped whole (native output carries no timestamps); `tail`: the last lines of what is left. Not
   * followed, what is read ends where the file ended when it was opened.
   */
  static async open(
    path: string,
    options: { follow: boolean; tail?: number; since?: number },
  ): Promise<FollowedOutput> {
    const files = await openRotations(path);
    const since = options.since;
    // Nothing in a file last written before `since` is newer than it: skipped (the current file from its end).
    const starts = files.map((entry) => (since !== undefined && entry.mtimeMs < since ? entry.size : 0));
    if (options.tail !== undefined) {
      const views: OutputSegment[] = files.map((entry, index) => ({
        size: entry.size - starts[index]!,
        read: (position, length) => readAt(entry.file, starts[index]! + position, length),
      }));
      const from = await tailStart(views, options.tail);
      files.forEach((entry, index) => {
        if (index < from.index) starts[index] = entry.size;
        else if (index === from.index) starts[index]! += from.offset;
      });
    }
    const backlog: Backlog[] = [];
    let current: FileHandle | undefined;
    let position = 0;
    for (const [index, entry] of files.entries()) {
      // Not followed, the file is read as far as it was when opened, as its copies are.
      if (entry.rotation === 0 && options.follow) {
        current = entry.file;
        position = starts[index]!;
      } else if (starts[index]! < entry.size) {
        backlog.push({ file: entry.file, position: starts[index]!, end: entry.size });
      } else await entry.file.close();
    }
    const rotatedInode = files.find((entry) => entry.rotation === 1)?.ino;
    return new FollowedOutput(path, {
      follow: options.follow,
      backlog,
      current,
      position,
      ...(rotatedInode !== undefined ? { rotatedInode } : {}),
    });
  }

  /** Up to `maxBytes` of what is there to read now; empty when nothing new was written. */
  async readNow(maxBytes: number): Promise<Buffer> {
    while (!this.closed) {
      const older = this.backlog[0];
      if (older) {
        const data = await readAt(older.file, older.position, Math.min(maxBytes, older.end - older.position));
        older.position += data.length;
        if (data.length > 0) return data;
        this.backlog.shift();
        await older.file.close();
        continue;
      }
      if (!this.follow) break;
      if (await this.noticeRotation()) continue;
      if (!this.current) {
        this.current = await open(this.path, 'r').catch(() => undefined);
        if (!this.current) return Buffer.alloc(0);
      }
      // Truncated with no copy kept (one file only): what was not read of it is gone; read it anew.
      if ((await this.current.stat()).size < this.position) this.position = 0;
      const data = await readAt(this.current, this.position, maxBytes);
      this.position += data.length;
      return data;
    }
    return Buffer.alloc(0);
  }

  async close(): Promise<void> {
    this.closed = true;
    const files = [...this.backlog.map((older) => older.file), ...(this.current ? [this.current] : [])];
    this.backlog.length = 0;
    this.current = undefined;
    await Promise.all(files.map((file) => file.close().catch(() => undefined)));
  }

  /**
   * A new `<path>.1` (another inode) means the file rotated, maybe more than once since the last look: the copies
   * made since are those newer than the `.1` seen then (it moved up to `.2`, `.3`...). The oldest of them holds the
   * rest of what this was reading (from the same position), the others are read whole, then the file: after what
   * the newest copy holds until it is truncated, and from its start after. A copy already deleted (the reader fell
   * further behind than the files kept) is output lost.
   */
  private async noticeRotation(): Promise<boolean> {
    const newest = await stat(`${this.path}.1`).catch(() => undefined);
    if (!newest || newest.ino === this.rotatedInode) return false;
    const copies = await openRotations(this.path, { copiesOnly: true });
    const seenAt = copies.findIndex((copy) => copy.ino === this.rotatedInode);
    const made = seenAt < 0 ? copies : copies.slice(seenAt + 1);
    for (const [index, copy] of made.entries()) {
      const from = index === 0 ? this.position : 0;
      if (from < copy.size) this.backlog.push({ file: copy.file, position: from, end: copy.size });
      else await copy.file.close();
    }
    for (const copy of copies.slice(0, Math.max(0, seenAt + 1))) await copy.file.close();
    this.rotatedInode = newest.ino;
    const size = this.current ? (await this.current.stat()).size : 0;
    this.position = size >= newest.size ? newest.size : 0;
    return true;
  }
}

interface OpenedFile {
  file: FileHandle;
  size: number;
  mtimeMs: number;
  ino: number;
  /** 0: the file itself; n: its copy `<path>.n`. */
  rotation: number;
}

/**
 * The rotated copies of `path` there are (oldest first), then the file itself (unless `copiesOnly`), each open
 * with what it holds.
 */
async function openRotations(path: string, options: { copiesOnly?: boolean } = {}): Promise<OpenedFile[]> {
  const name = basename(path);
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  const rotations = names
    .flatMap((entry) => {
      const match = entry.startsWith(`${name}.`) ? /^\d+$/.exec(entry.slice(name.length + 1)) : null;
      return match && Number(match[0]) > 0 ? [Number(match[0])] : [];
    })
    .sort((a, b) => b - a);
  const opened: OpenedFile[] = [];
  try {
    for (const rotation of options.copiesOnly ? rotations : [...rotations, 0]) {
      const file = await open(rotation === 0 ? path : `${path}.${rotation}`, 'r').catch(() => undefined);
      if (!file) continue;
      const info = await file.stat();
      opened.push({ file, size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, rotation });
    }
  } catch (error) {
    await Promise.all(opened.map((entry) => entry.file.close()));
    throw error;
  }
  return opened;
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  if (length <= 0) return Buffer.alloc(0);
  const buffer = Buffer.allocUnsafe(length);
  const { bytesRead } = await file.read(buffer, 0, length, position);
  return buffer.subarray(0, bytesRead);
}
