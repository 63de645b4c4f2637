import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RestartLedger } from '../../node-engine/state/restart-ledger.js';

describe('restart ledger', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-ledger-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps counts across a reload, per generation', async () => {
    const ledger = await RestartLedger.load(dir);
    await ledger.record('job/0', { generation: 3, restarts: 2, consecutiveFailures: 2 });
    const again = await RestartLedger.load(dir);
    expect(again.get('job/0', 3)).toEqual({ generation: 3, restarts: 2, consecutiveFailures: 2 });
    expect(again.get('job/0', 4)).toBeUndefined();
    expect(again.get('job/1', 3)).toBeUndefined();
  });

  it('forgets instances no longer desired', async () => {
    const ledger = await RestartLedger.load(dir);
    await ledger.record('a/0', { generation: 1, restarts: 1, consecutiveFailures: 1 });
    await ledger.record('b/0', { generation: 1, restarts: 1, consecutiveFailures: 1 });
    await ledger.retain(new Set(['b/0']));
    const again = await RestartLedger.load(dir);
    expect(again.get('a/0', 1)).toBeUndefined();
    expect(again.get('b/0', 1)?.restarts).toBe(1);
  });

  it('starts empty from a missing or broken file', async () => {
    expect((await RestartLedger.load(dir)).get('a/0', 1)).toBeUndefined();
    writeFileSync(join(dir, 'restarts.json'), '{"a/0": {"generation": "x"');
    expect((await RestartLedger.load(dir)).get('a/0', 1)).toBeUndefined();
  });
});
