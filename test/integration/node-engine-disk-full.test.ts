import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DesiredStateStore } from '../../node-engine/state/desired-state.js';
import { stateCommand } from '../helpers/commands.js';

const command = stateCommand;

/**
 * The node engine's data dir on a small tmpfs (an SD card that filled up), filled to the last byte: a command
 * that cannot be written changes nothing, leaves no partial file, and goes through once there is room again.
 */
describe('desired state on a full disk (tmpfs)', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ne-disk-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir]);
  });

  afterAll(async () => {
    execFileSync('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a command it cannot write without changing its state, and takes it again once there is room', async () => {
    const store = await DesiredStateStore.load(dir, 'n1');
    await store.apply(command('deploy', 1, 0, 'kept'));
    const before = await readFile(store.path, 'utf8');
    // Fill the disk: write until ENOSPC.
    const filler = join(dir, 'filler');
    try {
      await writeFile(filler, Buffer.alloc(1024 * 1024));
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    const deploy = command('deploy', 1, 0, 'new');
    const remove = command('delete', 2, 0, 'kept');
    await expect(store.apply(deploy)).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(store.apply({ ...remove, instance: -1 })).rejects.toMatchObject({ code: 'ENOSPC' });
    // Nothing changed: not in memory, not on disk, and no temporary file left.
    expect(store.get('new', 0)).toBeUndefined();
    expect(store.get('kept', 0)).toMatchObject({ want: 'run', generation: 1 });
    expect(store.hasProcessed(deploy.id)).toBe(false);
    expect(await readFile(store.path, 'utf8')).toBe(before);
    expect((await readdir(dir)).sort()).toEqual(['desired-state.json', 'filler']);

    await unlink(filler);
    expect((await store.apply(deploy)).kind).toBe('applied');
    expect((await store.apply({ ...remove, instance: -1 })).kind).toBe('applied');
    const reloaded = await DesiredStateStore.load(dir, 'n1');
    expect(reloaded.get('new', 0)).toMatchObject({ want: 'run' });
    expect(reloaded.get('kept', 0)).toMatchObject({ want: 'removed', generation: 2 });
  });

  it('removes the temporary files of writes a crash cut short when it loads', async () => {
    await writeFile(join(dir, 'desired-state.json.4242.tmp'), '{"torn":');
    await DesiredStateStore.load(dir, 'n1');
    expect((await readdir(dir)).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });
});
