import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteStore, type Store } from '../../cluster-manager/store/index.js';
import { JobSpecSchema } from '../../shared/index.js';

describe('cluster manager store', () => {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-store-'));
    store = SqliteStore.open(dir);
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
    version: 1,
    rollout: null,
  });

  it('keeps its data dir 0700 and the database with its WAL 0600, also when they were wider before', () => {
    store.jobs.insertJob(job('a', 'web'));
    const mode = (path: string) => statSync(path).mode & 0o777;
    expect(mode(dir)).toBe(0o700);
    for (const suffix of ['', '-wal', '-shm'])
      expect(mode(join(dir, `cluster-manager.db${suffix}`))).toBe(0o600);
    store.close();
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'cluster-manager.db'), 0o644);
    store = SqliteStore.open(dir);
    expect([mode(dir), mode(join(dir, 'cluster-manager.db'))]).toEqual([0o700, 0o600]);
    expect(store.jobs.getJob('a')?.name).toBe('web');
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
    store = SqliteStore.open(dir);
    expect(store.jobs.nextGeneration('a')).toBe(3);
    expect(store.jobs.getJob('a')?.spec.image).toBe('edge/busybox:latest');
  });

  it('keeps jobs, instances and moves in memory exactly as SQLite has them, also when transactions roll back', () => {
    // A seeded walk of writes, a third of the transactions thrown away midway; after each step the memory of
    // the live store must equal what a store opened fresh from the same file reads.
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return (seed >>> 12) % n;
    };
    const statuses = ['pending', 'scheduled', 'running', 'failed', 'lost', 'stopped'] as const;
    const nodes = ['n1', 'n2', 'n3'];
    const view = (s: Store) => ({
      jobs: s.jobs.listJobs(),
      instances: s.jobs
        .listJobs()
        .flatMap((j) => s.jobs.instancesOf(j.id))
        .concat(s.jobs.instancesOf('missing')),
      onNodes: nodes.map((node) => s.jobs.instancesOnNode(node)),
      byStatus: statuses.map((status) =>
        s.jobs
          .instancesWithStatus(status)
          .map((i) => `${i.jobId}/${i.number}`)
          .sort(),
      ),
      counts: s.jobs.countByStatus().sort((a, b) => (a.status < b.status ? -1 : 1)),
      addressNumbers: [...s.jobs.usedAddressNumbers()].sort((a, b) => a - b),
      generations: s.jobs.listJobs().map((j) => s.jobs.lastGeneration(j.id)),
      live: ['web-0', 'web-1', 'web-2', 'web-3'].map((name) => s.jobs.findLiveJobByName(name)?.id ?? null),
      byAddress: ['10.30.0.1', '10.30.0.2', '10.30.1.1'].map(
        (ip) => s.jobs.findLiveJobByAddress(ip)?.id ?? null,
      ),
      moves: s.jobs
        .listJobs()
        .flatMap((j) => s.moves.ofJob(j.id))
        .sort((a, b) => (`${a.jobId}/${a.number}` < `${b.jobId}/${b.number}` ? -1 : 1)),
      toNodes: nodes.map((node) => s.moves.toNode(node).length),
    });
    let nextJob = 0;
    let ip = 0;
    let most = 0;
    for (let step = 0; step < 400; step++) {
      const doomed = random(3) === 0;
      try {
        store.transaction(() => {
          for (let write = 0; write < 1 + random(4); write++) {
            const jobs = store.jobs.listJobs();
            const target = jobs[random(Math.max(1, jobs.length))];
            const action = random(8);
            if (action === 0 || !target) {
              const id = `job-${nextJob++}`;
              const name = random(4) === 0 ? `web-${random(4)}` : `app-${id}`;
              store.jobs.insertJob({ ...job(id, name), serviceIp: `10.30.0.${++ip}` });
            } else if (action === 1) {
              const number = store.jobs.instancesOf(target.id).length;
              store.jobs.insertInstance({
                jobId: target.id,
                number,
                nodeId: random(4) === 0 ? null : nodes[random(3)]!,
                status: statuses[random(statuses.length)]!,
                detail: '',
                containerId: null,
                generation: store.jobs.nextGeneration(target.id),
                restarts: 0,
                startedAt: null,
                exitCode: null,
                updatedAt: step,
                instanceIp: random(2) ? `10.30.1.${++ip}` : null,
                namespaceIp: null,
                reschedules: [],
                version: 1,
                versionSince: 0,
                health: null,
                healthySince: null,
              });
            } else if (action === 2 || action === 3) {
              const instances = store.jobs.instancesOf(target.id);
              const instance = instances[random(Math.max(1, instances.length))];
              if (instance)
                store.jobs.updateInstance({
                  ...instance,
                  status: statuses[random(statuses.length)]!,
                  nodeId: nodes[random(3)]!,
                  detail: `step ${step}`,
                  updatedAt: step,
                  reschedules: random(3) ? instance.reschedules : [...instance.reschedules, step],
                });
            } else if (action === 4) {
              const instances = store.jobs.instancesOf(target.id);
              const instance = instances.at(-1);
              if (instance) store.jobs.removeInstance(target.id, instance.number);
            } else if (action === 5) {
              store.jobs.setJobState(target.id, random(2) ? 'deleting' : 'active', step);
            } else if (action === 6) {
              const instance = store.jobs.instancesOf(target.id)[0];
              if (instance && !store.moves.get(target.id, instance.number))
                store.moves.insert({
                  jobId: target.id,
                  number: instance.number,
                  fromNode: nodes[random(3)]!,
                  toNode: nodes[random(3)]!,
                  generation: instance.generation,
                  startedAt: step,
                });
              else if (instance) store.moves.remove(target.id, instance.number);
            } else if (random(4) === 0) store.jobs.removeJob(target.id);
          }
          if (doomed) throw new Error('rolled back');
        });
      } catch (error) {
        // A doomed transaction, or one SQLite refused (a second live job of the same name): both roll back.
        if (!doomed && !/UNIQUE/.test((error as Error).message)) throw error;
      }
      if (step % 25 === 0 || step === 399) {
        const fresh = SqliteStore.open(dir);
        most = Math.max(most, store.jobs.allInstances().length);
        try {
          expect(view(store)).toEqual(view(fresh));
        } finally {
          fresh.close();
        }
      }
    }
    // The walk got somewhere: many instances at some check, and some transactions rolled back on their own.
    expect(most).toBeGreaterThan(20);
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
