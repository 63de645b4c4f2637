import { appendFileSync, closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { logLimitsOf, rotateIfLarger } from '../../node-engine/runtimes/log-limits.js';
import { JobDefinitionSchema } from '../../shared/index.js';

describe('workload output limits', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it("takes a job's logs block over the node's limits", () => {
    const job = (logs?: object) =>
      JobDefinitionSchema.parse({ id: 'j', name: 'j', image: 'x', ...(logs ? { logs } : {}) });
    expect(logLimitsOf(job(), { maxSizeMB: 10, maxFiles: 3 })).toEqual({ maxSizeMB: 10, maxFiles: 3 });
    expect(logLimitsOf(job({ maxFiles: 5 }), { maxSizeMB: 10, maxFiles: 3 })).toEqual({
      maxSizeMB: 10,
      maxFiles: 5,
    });
    expect(() => job({ maxSizeMB: 0 })).toThrow();
  });

  it('rotates a file past its size, keeps maxFiles of them, and the writer goes on at the start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'log-limits-'));
    dirs.push(dir);
    const path = join(dir, 'stdout.log');
    // The workload's own descriptor, opened for appending as the native runtime opens it.
    const fd = openSync(path, 'a');
    const limits = { maxSizeMB: 1, maxFiles: 3 };
    const chunk = Buffer.alloc(700 * 1024, 'x');
    for (let round = 1; round <= 4; round++) {
      writeSync(fd, chunk);
      expect(await rotateIfLarger(path, limits)).toBe(false);
      writeSync(fd, chunk);
      appendFileSync(path, `round ${round}\n`);
      expect(await rotateIfLarger(path, limits)).toBe(true);
      expect(statSync(path).size).toBe(0);
      expect(readFileSync(`${path}.1`, 'utf8').endsWith(`round ${round}\n`)).toBe(true);
    }
    writeSync(fd, 'after\n');
    closeSync(fd);
    // Appended at the new end, not at the old offset (no hole of zeros).
    expect(readFileSync(path, 'utf8')).toBe('after\n');
    expect((await readdir(dir)).sort()).toEqual(['stdout.log', 'stdout.log.1', 'stdout.log.2']);
    expect(readFileSync(`${path}.2`, 'utf8').endsWith('round 3\n')).toBe(true);
  });
});
