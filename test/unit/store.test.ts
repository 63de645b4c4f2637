import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Store } from '../../cluster-manager/store/index.js';
import { JobSpecSchema } from '../../shared/index.js';

describe('cluster manager store', () => {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-store-'));
    store = Store.open(dir);
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const job = (id: string, name: string) => ({
    id,
    name,
    spec: JobSpecSchema.parse({ name, image: 'edge/busybox:latest' }),
    state: 'active' as const,
    createdAt: 1,
    updatedAt: 1,
    serviceIp: null,
  });

  it('keeps a name unique among live jobs only', () => {
    store.jobs.insertJob(job('a', 'web'));
    expect(() => store.jobs.insertJob(job('b', 'web'))).toThrow(/UNIQUE/);
    store.jobs.setJobState('a', 'deleting', 2);
    store.jobs.insertJob(job('b', 'web'));
    expect(store.jobs.findJob('web')?.id).toBe('b');
    expect(store.jobs.findJob('a')?.state).toBe('deleting');
  });

  it('hands out generations that only grow, and keeps everything across a reopen', () => {
    store.jobs.insertJob(job('a', 'web'));
    expect([store.jobs.nextGeneration('a'), store.jobs.nextGeneration('a')]).toEqual([1, 2]);
    store.close();
    store = Store.open(dir);
    expect(store.jobs.nextGeneration('a')).toBe(3);
    expect(store.jobs.getJob('a')?.spec.image).toBe('edge/busybox:latest');
  });

  it('prunes acked commands past the horizon and old events, never unacked commands', () => {
    store.jobs.insertJob(job('a', 'web'));
    const command = (id: string) => ({
      id,
      command: 'deploy' as const,
      job: { id: 'a', ...job('a', 'web').spec },
      instance: 0,
      generation: 1,
      cluster: ['c'],
      worker: ['n1'],
      issuedAt: 1,
    });
    store.commands.insert(command('old'), 'n1', 1);
    store.commands.insert(command('open'), 'n1', 1);
    store.commands.markAcked('old', true, null, 10);
    expect(store.commands.markAcked('old', true, null, 11)).toBe(false);
    expect(store.commands.pruneAcked(100)).toBe(1);
    expect(store.commands.unacked().map((c) => c.id)).toEqual(['open']);
    for (let i = 0; i < 5; i++) store.events.record('test', `event ${i}`);
    expect(store.events.prune(2)).toBe(3);
    expect(store.events.recent(10).map((e) => e.message)).toEqual(['event 4', 'event 3']);
  });
});
