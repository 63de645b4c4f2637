import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClientError } from '../../cluster-manager/errors.js';
import { parseAddressPlan } from '../../cluster-manager/network/address-plan.js';
import { OverlayAddresses } from '../../cluster-manager/network/overlay-addresses.js';
import {
  type InstanceRecord,
  type JobRecord,
  SqliteStore,
  type Store,
} from '../../cluster-manager/store/index.js';
import { JobSpecSchema } from '../../shared/index.js';

const logger = pino({ level: 'silent' });

const job = (id: string, serviceIp: string | null): JobRecord => ({
  id,
  name: id,
  spec: JobSpecSchema.parse({ name: id, image: 'edge/busybox:latest' }),
  state: 'active',
  createdAt: 1,
  updatedAt: 1,
  serviceIp,
  version: 1,
  rollout: null,
});

const instance = (jobId: string, number: number, instanceIp: string | null): InstanceRecord => ({
  jobId,
  number,
  nodeId: null,
  status: 'pending',
  detail: '',
  containerId: null,
  generation: 0,
  restarts: 0,
  startedAt: null,
  exitCode: null,
  updatedAt: 1,
  instanceIp,
  namespaceIp: null,
  reschedules: [],
  version: 1,
  versionSince: 0,
  health: null,
  healthySince: null,
});

const node = (id: string) => ({
  id,
  name: id,
  secretHash: 'x',
  info: {
    name: id,
    arch: 'amd64' as const,
    os: 'linux',
    cpus: 1,
    memoryBytes: 1,
    gpus: [],
    sensors: [],
    runtimes: ['docker' as const],
    labels: {},
    version: 'test',
    overlay: true,
  },
  address: null,
  status: 'online' as const,
  registeredAt: 1,
  lastSeen: null,
});

describe('overlay addresses in the store', () => {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-overlay-'));
    store = SqliteStore.open(dir);
  });
  afterEach(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('makes a duplicate impossible: subnets, service IPs, instance IPs, and one used as the other', () => {
    store.nodes.upsert(node('a'));
    store.nodes.upsert(node('b'));
    store.nodes.setSubnet('a', '10.18.0.0/26');
    expect(() => store.nodes.setSubnet('b', '10.18.0.0/26')).toThrow(/UNIQUE/);
    store.jobs.insertJob(job('j1', '10.30.0.1'));
    expect(() => store.jobs.insertJob(job('j2', '10.30.0.1'))).toThrow(/UNIQUE/);
    store.jobs.insertInstance(instance('j1', 0, '10.30.0.2'));
    expect(() => store.jobs.insertInstance(instance('j1', 1, '10.30.0.2'))).toThrow(/UNIQUE/);
    expect(() => store.jobs.insertInstance(instance('j1', 1, '10.30.0.1'))).toThrow(/UNIQUE/);
    store.jobs.insertInstance(instance('j1', 1, null));
    expect(() => store.jobs.updateInstance(instance('j1', 1, '10.30.0.1'))).toThrow(/UNIQUE/);
    expect(() => store.jobs.insertJob(job('j3', '10.30.0.2'))).toThrow(/UNIQUE/);
    store.jobs.insertJob(job('j3', null));
    expect(() => store.jobs.setServiceIp('j3', '10.30.0.2')).toThrow(/UNIQUE/);
  });

  it('hands out the lowest free addresses and the same again once their rows are gone', () => {
    const addresses = new OverlayAddresses(store, parseAddressPlan('10.18.0.0/24', '10.30.0.0/29'), logger);
    const first = store.transaction(() => {
      const [serviceIp, ...instanceIps] = addresses.take(3);
      store.jobs.insertJob(job('j1', serviceIp!));
      instanceIps.forEach((ip, number) => {
        store.jobs.insertInstance(instance('j1', number, ip));
      });
      return [serviceIp, ...instanceIps];
    });
    expect(first).toEqual(['10.30.0.1', '10.30.0.2', '10.30.0.3']);
    store.jobs.removeInstance('j1', 0);
    expect(addresses.take(2)).toEqual(['10.30.0.2', '10.30.0.4']);
    store.jobs.removeJob('j1');
    expect(addresses.take(6)).toEqual([
      '10.30.0.1',
      '10.30.0.2',
      '10.30.0.3',
      '10.30.0.4',
      '10.30.0.5',
      '10.30.0.6',
    ]);
  });

  it('refuses more addresses than are free with a 409 that says so', () => {
    const addresses = new OverlayAddresses(store, parseAddressPlan('10.18.0.0/24', '10.30.0.0/29'), logger);
    store.jobs.insertJob(job('j1', '10.30.0.1'));
    let error: unknown;
    try {
      addresses.take(6);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ClientError);
    expect(error).toMatchObject({
      status: 409,
      code: 'address_pool_exhausted',
      message: 'the service address pool 10.30.0.0/29 is exhausted: 6 wanted, 5 free of 6',
    });
  });

  it('gives a worker with a net manager the lowest free /26 once, and keeps it', () => {
    const addresses = new OverlayAddresses(store, parseAddressPlan('10.18.0.0/25', '10.30.0.0/16'), logger);
    for (const id of ['a', 'b', 'c', 'd']) store.nodes.upsert(node(id));
    expect(addresses.subnetFor('a', true)).toBe('10.18.0.0/26');
    expect(addresses.subnetFor('b', false)).toBeNull();
    expect(addresses.subnetFor('c', true)).toBe('10.18.0.64/26');
    expect(addresses.subnetFor('a', false)).toBe('10.18.0.0/26');
    expect(addresses.subnetFor('a', true)).toBe('10.18.0.0/26');
    expect(addresses.subnetFor('d', true)).toBeNull();
    expect(store.events.recent(5).map((event) => event.type)).toContain('overlay.exhausted');
  });

  it('backfills jobs and instances made without addresses, as far as the pool goes', () => {
    store.jobs.insertJob(job('old', null));
    store.jobs.insertInstance(instance('old', 0, null));
    store.jobs.insertInstance(instance('old', 1, null));
    store.jobs.insertJob(job('new', '10.30.0.1'));
    store.jobs.insertInstance(instance('new', 0, '10.30.0.2'));
    new OverlayAddresses(store, parseAddressPlan('10.18.0.0/24', '10.30.0.0/16'), logger).backfill();
    expect(store.jobs.getJob('old')?.serviceIp).toBe('10.30.0.3');
    expect(store.jobs.instancesOf('old').map((i) => i.instanceIp)).toEqual(['10.30.0.4', '10.30.0.5']);
    expect(store.jobs.getJob('new')?.serviceIp).toBe('10.30.0.1');

    store.jobs.insertJob(job('late', null));
    store.jobs.insertInstance(instance('late', 0, null));
    new OverlayAddresses(store, parseAddressPlan('10.18.0.0/24', '10.30.0.0/29'), logger).backfill();
    expect(store.jobs.getJob('late')?.serviceIp).toBe('10.30.0.6');
    expect(store.jobs.getInstance('late', 0)?.instanceIp).toBeNull();
    expect(store.events.recent(5).map((event) => event.type)).toContain('overlay.exhausted');
  });
});
