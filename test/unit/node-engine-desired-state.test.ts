import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DesiredStateStore, PROCESSED_COMMANDS_LIMIT } from '../../node-engine/state/desired-state.js';
import { stateCommand } from '../helpers/commands.js';

const dirs: string[] = [];
async function store(nodeId = 'n1'): Promise<DesiredStateStore> {
  const dir = await mkdtemp(join(tmpdir(), 'ne-desired-'));
  dirs.push(dir);
  return DesiredStateStore.load(dir, nodeId);
}

const command = stateCommand;

describe('desired state', () => {
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  it('deploy sets want run and is persisted before apply resolves', async () => {
    const s = await store();
    const outcome = await s.apply(command('deploy', 1));
    expect(outcome.kind).toBe('applied');
    expect(s.get('j1', 0)).toMatchObject({ want: 'run', generation: 1 });
    const file = JSON.parse(await readFile(s.path, 'utf8'));
    expect(file.instances[0]).toMatchObject({ instance: 0, generation: 1, want: 'run' });
    const reloaded = await DesiredStateStore.load(join(s.path, '..'), 'n1');
    expect(reloaded.get('j1', 0)?.want).toBe('run');
  });

  it('a repeated command id is a duplicate, even after a reload', async () => {
    const s = await store();
    const deploy = command('deploy', 1);
    await s.apply(deploy);
    expect(await s.apply(deploy)).toEqual({ kind: 'duplicate' });
    const reloaded = await DesiredStateStore.load(join(s.path, '..'), 'n1');
    expect(reloaded.hasProcessed(deploy.id)).toBe(true);
  });

  it('ignores older generations and lets a tombstone win at the same generation', async () => {
    const s = await store();
    await s.apply(command('deploy', 3));
    expect((await s.apply(command('deploy', 2))).kind).toBe('stale');
    expect((await s.apply(command('delete', 2))).kind).toBe('stale');
    expect(s.get('j1', 0)?.want).toBe('run');
    expect((await s.apply(command('delete', 3))).kind).toBe('applied');
    expect(s.get('j1', 0)).toMatchObject({ want: 'removed', generation: 3 });
    expect((await s.apply(command('deploy', 3))).kind).toBe('stale');
    expect((await s.apply(command('deploy', 1))).kind).toBe('stale');
    expect(s.get('j1', 0)?.want).toBe('removed');
    expect((await s.apply(command('move', 4))).kind).toBe('applied');
    expect(s.get('j1', 0)).toMatchObject({ want: 'run', generation: 4 });
  });

  it('delete with instance -1 tombstones every instance of the job and keeps older deploys out', async () => {
    const s = await store();
    await s.apply(command('deploy', 1, 0));
    await s.apply(command('replicate', 1, 1));
    await s.apply(command('deploy', 1, 0, 'other'));
    const outcome = await s.apply(command('delete', 1, -1));
    expect(outcome.kind === 'applied' && outcome.changed.length).toBe(2);
    expect(s.get('j1', 0)?.want).toBe('removed');
    expect(s.get('j1', 1)?.want).toBe('removed');
    expect(s.get('other', 0)?.want).toBe('run');
    expect((await s.apply(command('deploy', 1, 2))).kind).toBe('stale');
  });

  it('starts empty when the file belongs to another node id', async () => {
    const s = await store('old');
    await s.apply(command('deploy', 1));
    const renamed = await DesiredStateStore.load(join(s.path, '..'), 'new');
    expect(renamed.all()).toEqual([]);
  });

  it('remembers a bounded number of command ids', async () => {
    const s = await store();
    const first = command('deploy', 1);
    await s.apply(first);
    for (let i = 0; i < PROCESSED_COMMANDS_LIMIT; i++) {
      (s as unknown as { remember(id: string): void }).remember(`x${i}`);
    }
    expect(s.hasProcessed(first.id)).toBe(false);
    expect(s.hasProcessed(`x${PROCESSED_COMMANDS_LIMIT - 1}`)).toBe(true);
  });
});
