import {
  appendFileSync,
  copyFileSync,
  mkdtempSync,
  rmSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FollowedOutput } from '../../node-engine/runtimes/followed-output.js';
import { rotateIfLarger } from '../../node-engine/runtimes/log-limits.js';

/** `from`..`to`, a number a line. */
const numbers = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, index) => `${from + index}\n`).join('');

/**
 * A native workload's output file read as `edgectl logs` reads it: from where it is asked, followed across the
 * node engine's rotations (copy and truncate, log-limits.ts) on real files. Each case writes and rotates between
 * reads, as a workload and the node engine's reconcile pass do while a reader is behind.
 */
describe('native output files, followed across rotations', () => {
  let dir: string;
  let path: string;
  const opened: FollowedOutput[] = [];

  /** Everything there is to read now, in pieces of at most 1000 bytes. */
  async function readNow(output: FollowedOutput): Promise<string> {
    let text = '';
    for (;;) {
      const data = await output.readNow(1000);
      if (data.length === 0) return text;
      text += data.toString();
    }
  }

  async function follow(options: { tail?: number; since?: number } = {}): Promise<FollowedOutput> {
    const output = await FollowedOutput.open(path, { follow: true, ...options });
    opened.push(output);
    return output;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'native-output-'));
    path = join(dir, 'stdout.log');
  });
  afterEach(async () => {
    for (const output of opened.splice(0)) await output.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads on where it was after a rotation: every line once, in order', async () => {
    writeFileSync(path, numbers(1, 1000));
    const output = await follow();
    expect((await output.readNow(2000)).toString()).toBe(numbers(1, 1000).slice(0, 2000));
    appendFileSync(path, numbers(1001, 2000));
    expect(await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 3 })).toBe(true);
    appendFileSync(path, numbers(2001, 3000));
    expect(await readNow(output)).toBe(numbers(1, 3000).slice(2000));
  });

  it('reads every copy made while it was behind, two rotations and more', async () => {
    writeFileSync(path, numbers(1, 100));
    const output = await follow();
    expect((await output.readNow(50)).toString()).toBe(numbers(1, 100).slice(0, 50));
    appendFileSync(path, numbers(101, 200));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 4 });
    appendFileSync(path, numbers(201, 300));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 4 });
    appendFileSync(path, numbers(301, 400));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 4 });
    appendFileSync(path, numbers(401, 450));
    expect(await readNow(output)).toBe(numbers(1, 450).slice(50));
    // And once more, with the copies it read still there.
    appendFileSync(path, numbers(451, 500));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 4 });
    appendFileSync(path, numbers(501, 510));
    expect(await readNow(output)).toBe(numbers(451, 510));
  });

  it('takes what is written between the copy and the truncation, once', async () => {
    writeFileSync(path, numbers(1, 100));
    const output = await follow();
    await output.readNow(100);
    // Rotation caught half way: the copy is made, the file not truncated yet, and the workload writes on.
    copyFileSync(path, `${path}.1`);
    appendFileSync(path, numbers(101, 110));
    const before = await readNow(output);
    truncateSync(path, 0);
    appendFileSync(path, numbers(111, 120));
    expect(before + (await readNow(output))).toBe(numbers(1, 120).slice(100));
  });

  it('reads a file truncated with no copy kept from its start again', async () => {
    writeFileSync(path, numbers(1, 10));
    const output = await follow();
    expect(await readNow(output)).toBe(numbers(1, 10));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 1 });
    appendFileSync(path, numbers(11, 12));
    expect(await readNow(output)).toBe(numbers(11, 12));
  });

  it('takes the last lines from the copies too, and skips files last written before `since`', async () => {
    writeFileSync(path, numbers(1, 10));
    await rotateIfLarger(path, { maxSizeMB: 0, maxFiles: 3 });
    appendFileSync(path, numbers(11, 12));
    expect(await readNow(await follow({ tail: 5 }))).toBe(numbers(8, 12));
    expect(await readNow(await follow())).toBe(numbers(1, 12));
    const hourAgo = new Date(Date.now() - 3_600_000);
    utimesSync(`${path}.1`, hourAgo, hourAgo);
    expect(await readNow(await follow({ since: Date.now() - 60_000 }))).toBe(numbers(11, 12));
    // A file last written before `since` holds nothing newer: followed, only what comes next.
    utimesSync(path, hourAgo, hourAgo);
    const later = await follow({ since: Date.now() - 60_000 });
    expect(await readNow(later)).toBe('');
    appendFileSync(path, numbers(13, 13));
    expect(await readNow(later)).toBe(numbers(13, 13));
  });

  it('reads only what was there when not following', async () => {
    writeFileSync(path, numbers(1, 3));
    const output = await FollowedOutput.open(path, { follow: false, tail: 2 });
    opened.push(output);
    appendFileSync(path, numbers(4, 5));
    expect(await readNow(output)).toBe(numbers(2, 3));
  });
});
