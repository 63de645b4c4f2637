import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AllocationLedger, schedulableNodeOf } from '../../cluster-manager/jobs/allocation-ledger.js';
import { holdsResources } from '../../cluster-manager/jobs/instance-states.js';
import type { SchedulableNode } from '../../cluster-manager/scheduler/index.js';
import { type InstanceRecord, SqliteStore, type Store } from '../../cluster-manager/store/index.js';
import { type InstanceStatus, JobSpecSchema, NodeInfoSchema } from '../../shared/index.js';
import { TestNode } from '../helpers/test-node.js';

/**
 * The scheduler's view rebuilt from scratch from every node, instance and move: the reference the ledger is held
 * to (what the cluster manager computed for every decision before the ledger existed).
 */
function rebuilt(store: Store, isOnline: (nodeId: string) => boolean): SchedulableNode[] {
  const byNode = new Map(
    store.nodes.list().map((node) => [node.id, schedulableNodeOf(node, isOnline(node.id))]),
  );
  const charge = (nodeId: string, jobId: string) => {
    const node = byNode.get(nodeId);
    const job = store.jobs.getJob(jobId);
    if (!node || !job) return;
    const { resources, ports } = job.spec;
    node.allocated.cpus += resources.cpus ?? 0;
    node.allocated.memoryBytes += (resources.memoryMB ?? 0) * 1024 * 1024;
    node.allocated.gpus += resources.gpus;
    for (const port of ports)
      if (port.host !== undefined) node.usedHostPorts.push(`${port.protocol}/${port.host}`);
    node.instancesByJob[jobId] = (node.instancesByJob[jobId] ?? 0) + 1;
    node.instanceCount++;
  };
  for (const job of store.jobs.listJobs()) {
    for (const instance of store.jobs.instancesOf(job.id))
      if (holdsResources(instance)) charge(instance.nodeId!, instance.jobId);
    for (const move of store.moves.ofJob(job.id)) charge(move.toNode, move.jobId);
  }
  return [...byNode.values()];
}

/**
 * The ledger kept in memory must always equal the scheduler's view rebuilt from the rows, whatever was written,
 * moved, removed or rolled back. Every step below compares the two.
 */
describe('the allocation ledger', () => {
  let dir: string;
  let store: Store;
  let ledger: AllocationLedger;
  const online = new Set<string>();
  const isOnline = (nodeId: string) => online.has(nodeId);

  const comparable = (nodes: readonly SchedulableNode[]) =>
    nodes.map((node) => ({
      ...node,
      allocated: {
        cpus: Math.round(node.allocated.cpus * 1e6) / 1e6,
        memoryBytes: node.allocated.memoryBytes,
        gpus: node.allocated.gpus,
      },
      usedHostPorts: [...node.usedHostPorts].sort(),
    }));
  const agrees = () =>
    expect(comparable(ledger.schedulableNodes())).toEqual(comparable(rebuilt(store, isOnline)));

  const addNode = (name: string) => {
    store.nodes.upsert({
      id: `id-${name}`,
      name,
      secretHash: 'x',
      info: NodeInfoSchema.parse(TestNode.info(name, { cpus: 8 })),
      address: null,
      status: 'online',
      registeredAt: 0,
      lastSeen: null,
    });
    online.add(`id-${name}`);
  };
  const addJob = (id: string, spec: Record<string, unknown>) =>
    store.jobs.insertJob({
      id,
      name: id,
      spec: JobSpecSchema.parse({ name: id, image: 'edge/busybox:latest', ...spec }),
      state: 'active',
      createdAt: 1,
      updatedAt: 1,
      serviceIp: null,
      version: 1,
      rollout: null,
    });
  const instance = (jobId: string, number: number, nodeId: string | null, status: InstanceStatus) =>
    ({
      jobId,
      number,
      nodeId,
      status,
      detail: '',
      containerId: null,
      generation: 1,
      restarts: 0,
      startedAt: null,
      exitCode: null,
      updatedAt: 1,
      instanceIp: null,
      namespaceIp: null,
      reschedules: [],
      version: 1,
      versionSince: 0,
      health: null,
      healthySince: null,
    }) satisfies InstanceRecord;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'edge-ledger-'));
    store = SqliteStore.open(dir);
    online.clear();
    for (const name of ['edge-a', 'edge-b', 'edge-c']) addNode(name);
    ledger = new AllocationLedger(store, isOnline);
  });
  afterEach(() => {
    ledger.stop();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('follows instances placed, changed, released and removed, moves, node changes, and job removal', () => {
    agrees();
    addJob('web', {
      resources: { cpus: 0.5, memoryMB: 64 },
      ports: [{ container: 80, host: 8080, protocol: 'tcp' }],
    });
    addJob('idle', {});
    store.jobs.insertInstance(instance('web', 0, 'id-edge-a', 'scheduled'));
    store.jobs.insertInstance(instance('web', 1, 'id-edge-b', 'running'));
    store.jobs.insertInstance(instance('idle', 0, 'id-edge-a', 'running'));
    store.jobs.insertInstance(instance('idle', 1, null, 'pending'));
    agrees();
    store.jobs.updateInstance(instance('web', 0, 'id-edge-a', 'failed'));
    agrees();
    store.jobs.updateInstance(instance('web', 0, 'id-edge-c', 'running'));
    store.moves.insert({
      jobId: 'web',
      number: 1,
      fromNode: 'id-edge-b',
      toNode: 'id-edge-a',
      generation: 2,
      startedAt: 1,
    });
    agrees();
    online.delete('id-edge-b');
    addNode('edge-d');
    agrees();
    store.moves.remove('web', 1);
    store.jobs.removeInstance('idle', 0);
    agrees();
    store.jobs.removeJob('web');
    agrees();
  });

  it('shows what a transaction wrote while it runs, and nothing of it once rolled back', () => {
    addJob('batch', { resources: { cpus: 1 } });
    agrees();
    expect(() =>
      store.transaction(() => {
        store.jobs.insertInstance(instance('batch', 0, 'id-edge-a', 'scheduled'));
        agrees();
        expect(ledger.schedulableNodes()[0]!.allocated.cpus).toBe(1);
        throw new Error('rolled back');
      }),
    ).toThrow('rolled back');
    agrees();
    expect(ledger.schedulableNodes()[0]!.allocated.cpus).toBe(0);
  });

  it('takes a changed spec: the job is charged at its new size', () => {
    addJob('grow', { resources: { cpus: 0.25 } });
    store.jobs.insertInstance(instance('grow', 0, 'id-edge-a', 'running'));
    agrees();
    const job = store.jobs.getJob('grow')!;
    store.jobs.setJobSpec('grow', { ...job.spec, resources: { ...job.spec.resources, cpus: 2 } }, 2);
    agrees();
    expect(ledger.schedulableNodes()[0]!.allocated.cpus).toBe(2);
  });

  it('forgets a removed node: a job charged there changes afterwards without a fault', () => {
    addJob('left', { resources: { cpus: 1 } });
    store.jobs.insertInstance(instance('left', 0, 'id-edge-c', 'running'));
    agrees();
    store.transaction(() => store.nodes.remove('id-edge-c', 1));
    agrees();
    // The job changes after its node is gone: its old charge there is taken off a node the ledger no longer has.
    const left = store.jobs.getInstance('left', 0)!;
    store.jobs.updateInstance({ ...left, nodeId: 'id-edge-a' });
    agrees();
    expect(ledger.schedulableNodes().map((node) => node.name)).toEqual(['edge-a', 'edge-b']);
  });
});
