import { describe, expect, it } from 'vitest';
import {
  checkArch,
  checkLabels,
  checkSensors,
  freeFraction,
  pickMoveTarget,
  placeInstances,
  type SchedulableNode,
  summarizeReasons,
} from '../../cluster-manager/scheduler/index.js';
import { type JobDefinition, type JobSpecInput, JobSpecSchema } from '../../shared/index.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

function job(spec: Partial<JobSpecInput> = {}, id = 'job-1'): JobDefinition {
  return { id, ...JobSpecSchema.parse({ name: 'hello', image: 'edge/busybox:latest', ...spec }) };
}

function node(name: string, overrides: Partial<SchedulableNode> = {}): SchedulableNode {
  return {
    id: `id-${name}`,
    name,
    status: 'online',
    arch: 'amd64',
    runtimes: ['docker', 'native'],
    labels: {},
    sensors: [],
    capacity: { cpus: 4, memoryBytes: 4 * GIB, gpus: 0 },
    allocated: { cpus: 0, memoryBytes: 0, gpus: 0 },
    usedHostPorts: [],
    instancesByJob: {},
    instanceCount: 0,
    ...overrides,
  };
}

function reasonFor(j: JobDefinition, n: SchedulableNode): string | undefined {
  const result = placeInstances(j, [0], [n]);
  expect(result.placements).toEqual([]);
  return result.unplaced[0]?.reasons[n.name];
}

describe('placeInstances: fit', () => {
  it('places an instance on the one node that fits', () => {
    expect(placeInstances(job(), [0], [node('edge-a')])).toEqual({
      placements: [{ instance: 0, nodeId: 'id-edge-a' }],
      unplaced: [],
    });
  });

  it('turns a cordoned node down, after offline and before anything else', () => {
    expect(reasonFor(job(), node('edge-a', { cordoned: true }))).toBe('cordoned');
    expect(reasonFor(job(), node('edge-a', { cordoned: true, status: 'offline' }))).toBe('offline');
    expect(
      placeInstances(job(), [0], [node('edge-a', { cordoned: true }), node('edge-b')]).placements,
    ).toEqual([{ instance: 0, nodeId: 'id-edge-b' }]);
  });

  it('places a job without cpu or memory requests on a node with nothing free', () => {
    const full = node('edge-a', { allocated: { cpus: 4, memoryBytes: 4 * GIB, gpus: 0 } });
    expect(placeInstances(job(), [0], [full]).placements).toEqual([{ instance: 0, nodeId: 'id-edge-a' }]);
  });

  it('leaves an instance unplaced with "no nodes registered" when there are no nodes', () => {
    expect(placeInstances(job(), [3], [])).toEqual({
      placements: [],
      unplaced: [{ instance: 3, reasons: {}, summary: 'no nodes registered' }],
    });
  });

  it('does not change the nodes it was given', () => {
    const nodes = [node('edge-a')];
    const before = structuredClone(nodes);
    placeInstances(
      job({ resources: { cpus: 1, memoryMB: 64 }, ports: [{ container: 80, host: 8080 }] }),
      [0],
      nodes,
    );
    expect(nodes).toEqual(before);
  });

  it('accepts a request that exactly fills the node, despite floating-point sums', () => {
    const n = node('edge-a', { capacity: { cpus: 0.3, memoryBytes: 128 * MIB, gpus: 0 } });
    const result = placeInstances(job({ resources: { cpus: 0.1, memoryMB: 64 } }), [0, 1, 2], [n]);
    expect(result.placements).toHaveLength(2);
    expect(result.unplaced[0]?.reasons['edge-a']).toBe('not enough memory (64 MiB asked, 0 MiB free)');
  });
});

describe('placeInstances: constraints, one reason per node', () => {
  it('turns down an offline node', () => {
    expect(reasonFor(job(), node('edge-a', { status: 'offline' }))).toBe('offline');
  });

  it('turns down a node without the runtime', () => {
    const j = job({ technology: 'native', image: '/usr/bin/sleep' });
    expect(reasonFor(j, node('edge-a', { runtimes: ['docker'] }))).toBe('no native runtime (has docker)');
    expect(reasonFor(j, node('edge-b', { runtimes: [] }))).toBe('no native runtime (has none)');
  });

  it('turns down a node of another arch', () => {
    const j = job({ constraints: { arch: ['arm64', 'arm-7'] } });
    expect(reasonFor(j, node('edge-a'))).toBe('arch amd64 not in constraints.arch (arm64, arm-7)');
    expect(checkArch(j, node('edge-b', { arch: 'arm-7' }))).toBeNull();
  });

  it('places only on nodes named by id or name', () => {
    const j = job({ constraints: { nodes: ['edge-b', 'id-edge-c'] } }, 'j');
    const nodes = [node('edge-a'), node('edge-b'), node('edge-c')];
    const result = placeInstances(j, [0, 1, 2], nodes);
    expect(result.placements.map((p) => p.nodeId).sort()).toEqual(['id-edge-b', 'id-edge-b', 'id-edge-c']);
    expect(reasonFor(j, node('edge-a'))).toBe('not named in constraints.nodes (edge-b, id-edge-c)');
  });

  it('says which label is missing or different', () => {
    const j = job({ constraints: { labels: { zone: 'a', tier: 'edge' } } });
    expect(reasonFor(j, node('edge-a', { labels: { zone: 'b', tier: 'edge' } }))).toBe(
      'label zone=b (wanted zone=a)',
    );
    expect(reasonFor(j, node('edge-b', { labels: { zone: 'a' } }))).toBe(
      'label tier missing (wanted tier=edge)',
    );
    expect(checkLabels(j, node('edge-c', { labels: { zone: 'a', tier: 'edge', extra: 'x' } }))).toBeNull();
  });

  it('matches sensors by type or id, and only available ones', () => {
    const camera = { id: 'cam0', type: 'camera', available: true };
    expect(
      checkSensors(job({ constraints: { sensors: ['camera'] } }), node('a', { sensors: [camera] })),
    ).toBeNull();
    expect(
      checkSensors(job({ constraints: { sensors: ['cam0'] } }), node('a', { sensors: [camera] })),
    ).toBeNull();
    const j = job({ constraints: { sensors: ['camera', 'temperature'] } });
    expect(reasonFor(j, node('edge-a', { sensors: [camera] }))).toBe('sensor temperature missing');
    expect(reasonFor(j, node('edge-b', { sensors: [{ ...camera, available: false }] }))).toBe(
      'sensor camera not available',
    );
  });

  it('counts free cpus as capacity minus what placed instances asked', () => {
    const n = node('edge-a', { allocated: { cpus: 3.75, memoryBytes: 0, gpus: 0 } });
    expect(reasonFor(job({ resources: { cpus: 0.5 } }), n)).toBe('not enough cpus (0.5 asked, 0.25 free)');
  });

  it('counts free memory in MiB', () => {
    const n = node('edge-a', { capacity: { cpus: 4, memoryBytes: 76 * MIB, gpus: 0 } });
    n.allocated.memoryBytes = 64 * MIB;
    expect(reasonFor(job({ resources: { memoryMB: 64 } }), n)).toBe(
      'not enough memory (64 MiB asked, 12 MiB free)',
    );
  });

  it('places GPU jobs only where GPUs are free', () => {
    const j = job({ resources: { gpus: 1 } });
    const cpuOnly = node('edge-a');
    const gpuNode = node('edge-b', { capacity: { cpus: 4, memoryBytes: 4 * GIB, gpus: 2 } });
    const result = placeInstances(j, [0, 1, 2], [cpuOnly, gpuNode]);
    expect(result.placements).toEqual([
      { instance: 0, nodeId: 'id-edge-b' },
      { instance: 1, nodeId: 'id-edge-b' },
    ]);
    expect(result.unplaced[0]?.reasons).toEqual({
      'edge-a': 'not enough gpus (1 asked, 0 free)',
      'edge-b': 'not enough gpus (1 asked, 0 free)',
    });
  });

  it('keeps host ports exclusive per node, per protocol', () => {
    const j = job({ ports: [{ container: 80, host: 8080 }] });
    expect(reasonFor(j, node('edge-a', { usedHostPorts: ['tcp/8080'] }))).toBe(
      'host port tcp/8080 already in use',
    );
    const udp = node('edge-b', { usedHostPorts: ['udp/8080'] });
    expect(placeInstances(j, [0], [udp]).placements).toHaveLength(1);
    const twoNodes = placeInstances(j, [0, 1, 2], [node('edge-a'), node('edge-b')]);
    expect(twoNodes.placements.map((p) => p.nodeId).sort()).toEqual(['id-edge-a', 'id-edge-b']);
    expect(twoNodes.unplaced[0]?.reasons).toEqual({
      'edge-a': 'host port tcp/8080 already in use',
      'edge-b': 'host port tcp/8080 already in use',
    });
  });

  it('ignores container ports without a host port', () => {
    const j = job({ ports: [{ container: 80 }] });
    expect(placeInstances(j, [0, 1], [node('edge-a')]).placements).toHaveLength(2);
  });
});

describe('placeInstances: ranking', () => {
  it('spreads 3 replicas over 3 nodes', () => {
    const result = placeInstances(job(), [0, 1, 2], [node('edge-a'), node('edge-b'), node('edge-c')]);
    expect(new Set(result.placements.map((p) => p.nodeId)).size).toBe(3);
  });

  it('spreads 4 replicas over 2 nodes 2 + 2', () => {
    const result = placeInstances(job(), [0, 1, 2, 3], [node('edge-a'), node('edge-b')]);
    const counts: Record<string, number> = {};
    for (const p of result.placements) counts[p.nodeId] = (counts[p.nodeId] ?? 0) + 1;
    expect(counts).toEqual({ 'id-edge-a': 2, 'id-edge-b': 2 });
  });

  it('counts instances of the job already placed before this call', () => {
    const busy = node('edge-a', { instancesByJob: { 'job-1': 2, other: 5 } });
    const result = placeInstances(job(), [2, 3], [busy, node('edge-b', { instancesByJob: { 'job-1': 1 } })]);
    expect(result.placements).toEqual([
      { instance: 2, nodeId: 'id-edge-b' },
      { instance: 3, nodeId: 'id-edge-a' },
    ]);
  });

  it('prefers the node with the most free capacity, then the name', () => {
    const loaded = node('edge-a', { allocated: { cpus: 2, memoryBytes: 2 * GIB, gpus: 0 } });
    const idle = node('edge-b');
    expect(placeInstances(job(), [0], [loaded, idle]).placements[0]?.nodeId).toBe('id-edge-b');
    expect(placeInstances(job(), [0], [node('edge-z'), node('edge-m')]).placements[0]?.nodeId).toBe(
      'id-edge-m',
    );
    expect(freeFraction(loaded)).toBeCloseTo(0.5);
  });

  it('books each placement so the next instance sees less free memory', () => {
    const small = node('edge-a', { capacity: { cpus: 4, memoryBytes: 100 * MIB, gpus: 0 } });
    const result = placeInstances(job({ resources: { memoryMB: 64 } }), [0, 1], [small]);
    expect(result.placements).toEqual([{ instance: 0, nodeId: 'id-edge-a' }]);
    expect(result.unplaced).toEqual([
      {
        instance: 1,
        reasons: { 'edge-a': 'not enough memory (64 MiB asked, 36 MiB free)' },
        summary: 'no node fits: edge-a: not enough memory (64 MiB asked, 36 MiB free)',
      },
    ]);
  });
});

describe('reasons summary', () => {
  it('names every node turned down, in name order, on one line', () => {
    const j = job({ resources: { memoryMB: 64 } });
    const tight = node('edge-a', { capacity: { cpus: 1, memoryBytes: 12 * MIB, gpus: 0 } });
    const result = placeInstances(j, [0], [node('edge-b', { status: 'offline' }), tight]);
    expect(result.unplaced[0]?.summary).toBe(
      'no node fits: edge-a: not enough memory (64 MiB asked, 12 MiB free); edge-b: offline',
    );
  });

  it('abbreviates a large fleet', () => {
    const reasons: Record<string, string> = {};
    for (let i = 0; i < 25; i++) reasons[`n${String(i).padStart(2, '0')}`] = 'offline';
    const summary = summarizeReasons(reasons);
    expect(summary.startsWith('no node fits: n00: offline; n01: offline;')).toBe(true);
    expect(summary.endsWith('n09: offline; ... and 15 more nodes')).toBe(true);
  });
});

describe('pickMoveTarget', () => {
  const nodes = () => [node('edge-a', { instancesByJob: { 'job-1': 1 } }), node('edge-b'), node('edge-c')];

  it('moves to the named node, by name or by id', () => {
    expect(pickMoveTarget(job(), 0, 'id-edge-a', nodes(), 'edge-c')).toEqual({ nodeId: 'id-edge-c' });
    expect(pickMoveTarget(job(), 0, 'id-edge-a', nodes(), 'id-edge-b')).toEqual({ nodeId: 'id-edge-b' });
  });

  it('refuses an unknown target', () => {
    expect(pickMoveTarget(job(), 0, 'id-edge-a', nodes(), 'edge-z')).toEqual({
      reasons: { 'edge-z': 'no such node' },
      summary: 'no node edge-z',
    });
  });

  it('refuses the node the instance runs on', () => {
    expect(pickMoveTarget(job(), 0, 'id-edge-a', nodes(), 'edge-a')).toEqual({
      reasons: { 'edge-a': 'instance 0 runs here already' },
      summary: 'instance 0 runs on edge-a already',
    });
  });

  it('refuses a target that does not fit, with the reason', () => {
    const list = nodes();
    list[1]!.status = 'offline';
    expect(pickMoveTarget(job(), 1, 'id-edge-a', list, 'edge-b')).toEqual({
      reasons: { 'edge-b': 'offline' },
      summary: 'edge-b: offline',
    });
  });

  it('picks the best other node when no target is named', () => {
    const list = nodes();
    list[1]!.allocated.cpus = 3;
    expect(pickMoveTarget(job(), 0, 'id-edge-a', list)).toEqual({ nodeId: 'id-edge-c' });
  });

  it('explains when no other node fits', () => {
    const list = nodes();
    list[1]!.status = 'offline';
    list[2]!.runtimes = ['native'];
    expect(pickMoveTarget(job(), 0, 'id-edge-a', list)).toEqual({
      reasons: {
        'edge-a': 'instance 0 runs here already',
        'edge-b': 'offline',
        'edge-c': 'no docker runtime (has native)',
      },
      summary:
        'no other node fits: edge-a: instance 0 runs here already; edge-b: offline; ' +
        'edge-c: no docker runtime (has native)',
    });
  });
});

describe('placeInstances: spread by default and bounded candidates on a large fleet', () => {
  const fleet = (count: number, each: (n: SchedulableNode, i: number) => void = () => {}) =>
    Array.from({ length: count }, (_, i) => {
      const n = node(`edge-${String(i).padStart(5, '0')}`);
      each(n, i);
      return n;
    });

  it('sends a job that asks for no resources to the node running the fewest instances', () => {
    const nodes = [
      node('edge-a', { instanceCount: 3 }),
      node('edge-b', { instanceCount: 0 }),
      node('edge-c', { instanceCount: 5 }),
    ];
    expect(placeInstances(job(), [0], nodes).placements).toEqual([{ instance: 0, nodeId: 'id-edge-b' }]);
  });

  it('spreads many jobs without resources over the fleet instead of piling them on one node', () => {
    const nodes = fleet(5);
    for (let j = 0; j < 10; j++) {
      const [placement] = placeInstances(job({}, `job-${j}`), [0], nodes).placements;
      nodes.find((n) => n.id === placement!.nodeId)!.instanceCount++;
    }
    expect(nodes.map((n) => n.instanceCount)).toEqual([2, 2, 2, 2, 2]);
  });

  it('places the same way twice for the same inputs, and replicas on distinct nodes', () => {
    const nodes = fleet(2000);
    const spec = job({ replicas: 10, resources: { cpus: 0.5, memoryMB: 64 } });
    const first = placeInstances(spec, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], nodes);
    expect(placeInstances(spec, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], nodes)).toEqual(first);
    expect(new Set(first.placements.map((p) => p.nodeId)).size).toBe(10);
  });

  it('finds the few nodes that fit in a large fleet', () => {
    const nodes = fleet(2000, (n, i) => {
      if (i % 500 === 7) n.labels = { camera: 'yes' };
    });
    const result = placeInstances(
      job({ constraints: { labels: { camera: 'yes' } } }),
      [0, 1, 2, 3, 4],
      nodes,
    );
    const chosen = result.placements.map((p) => p.nodeId);
    expect(chosen).toHaveLength(5);
    for (const id of chosen)
      expect(['id-edge-00007', 'id-edge-00507', 'id-edge-01007', 'id-edge-01507']).toContain(id);
    expect(new Set(chosen.slice(0, 4)).size).toBe(4);
  });

  it('picks among the roomiest nodes from its sample: never one that is nearly full when most are empty', () => {
    const nodes = fleet(2000, (n, i) => {
      if (i % 2 === 0) n.allocated = { cpus: 3.5, memoryBytes: 3.5 * GIB, gpus: 0 };
    });
    const result = placeInstances(job({ resources: { cpus: 0.25 } }), [0, 1, 2, 3, 4, 5, 6, 7], nodes);
    for (const { nodeId } of result.placements)
      expect(nodes.find((n) => n.id === nodeId)!.allocated.cpus).toBe(0);
  });

  it('places a job pinned to one node of a large fleet there, and names every node when nothing fits', () => {
    const nodes = fleet(1000);
    expect(placeInstances(job({ constraints: { nodes: ['edge-00666'] } }), [0], nodes).placements).toEqual([
      { instance: 0, nodeId: 'id-edge-00666' },
    ]);
    const unplaced = placeInstances(job({ resources: { cpus: 64 } }), [0], nodes).unplaced[0]!;
    expect(Object.keys(unplaced.reasons)).toHaveLength(1000);
    expect(unplaced.summary).toMatch(/not enough cpus/);
  });
});
