import { it } from 'vitest';
import { CANDIDATES, placeInstances, type SchedulableNode } from '../../cluster-manager/scheduler/index.js';
import { type JobDefinition, JobSpecSchema } from '../../shared/index.js';
import { report } from './report.js';

/**
 * The pure scheduler alone at fleet size: 10,000 nodes of mixed sizes (a tenth labelled `gpu=yes`), jobs of 10
 * replicas asking for cpus and memory, every placement booked into the snapshot before the next job as the
 * cluster manager's state would be. Sampled ranking (CANDIDATES feasible nodes per instance) against the
 * baseline of scoring every node, in the same run.
 */
const NODES = Number(process.env.BENCH_SCHEDULER_NODES ?? 10_000);
const MIB = 1024 * 1024;

function fleet(): SchedulableNode[] {
  return Array.from({ length: NODES }, (_, i) => ({
    id: `node-${i}`,
    name: `edge-${String(i).padStart(5, '0')}`,
    status: 'online' as const,
    arch: 'amd64',
    runtimes: ['docker' as const],
    labels: (i % 10 === 0 ? { gpu: 'yes' } : {}) as Record<string, string>,
    sensors: [],
    capacity: { cpus: 2 + (i % 4) * 2, memoryBytes: (2 + (i % 4) * 2) * 1024 * MIB, gpus: 0 },
    allocated: { cpus: 0, memoryBytes: 0, gpus: 0 },
    usedHostPorts: [],
    instancesByJob: {},
    instanceCount: 0,
  }));
}

function job(index: number): JobDefinition {
  return {
    id: `job-${index}`,
    ...JobSpecSchema.parse({
      name: `job-${index}`,
      image: 'edge/busybox:latest',
      replicas: 10,
      resources: { cpus: 0.1, memoryMB: 32 },
      ...(index % 20 === 0 ? { constraints: { labels: { gpu: 'yes' } } } : {}),
    }),
  };
}

/** Places `jobs` jobs of 10 replicas, booking each placement into the snapshot; placements per second. */
function measure(
  jobs: number,
  candidates: number,
): { perSecond: number; placed: number; maxPerNode: number } {
  const nodes = fleet();
  const byId = new Map(nodes.map((node) => [node.id, node]));
  const numbers = Array.from({ length: 10 }, (_, i) => i);
  let placed = 0;
  const started = performance.now();
  for (let j = 0; j < jobs; j++) {
    const definition = job(j);
    for (const { nodeId } of placeInstances(definition, numbers, nodes, { candidates }).placements) {
      const node = byId.get(nodeId)!;
      node.allocated.cpus += 0.1;
      node.allocated.memoryBytes += 32 * MIB;
      node.instancesByJob[definition.id] = (node.instancesByJob[definition.id] ?? 0) + 1;
      node.instanceCount++;
      placed++;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    perSecond: Math.round(placed / seconds),
    placed,
    maxPerNode: Math.max(...nodes.map((node) => node.instanceCount)),
  };
}

it(`scheduler: placements per second at ${NODES} nodes`, () => {
  const sampled = measure(1000, CANDIDATES);
  const baseline = measure(20, Number.POSITIVE_INFINITY);
  report('scheduler', [
    { ranking: `sample of ${CANDIDATES} feasible`, nodes: NODES, jobs: 1000, ...sampled },
    { ranking: 'every node (baseline)', nodes: NODES, jobs: 20, ...baseline },
  ]);
});
