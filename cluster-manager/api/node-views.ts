import type { NodeTelemetry, NodeView } from '../../shared/index.js';
import { schedulableNodes } from '../jobs/cluster-snapshot.js';
import type { NodeLiveness } from '../liveness/node-liveness.js';
import type { NodeRecord, Store } from '../store/index.js';

export function nodeViews(
  store: Store,
  liveness: NodeLiveness,
  nodes: NodeRecord[] = store.nodes.list(),
): NodeView[] {
  const allocations = new Map(
    schedulableNodes(store, liveness.isOnline, nodes).map((node) => [node.id, node.allocated]),
  );
  return nodes.map((node) => {
    const telemetry: NodeTelemetry | undefined =
      liveness.latestTelemetry(node.id) ?? node.telemetry ?? undefined;
    return {
      id: node.id,
      name: node.name,
      status: liveness.isOnline(node.id) ? 'online' : 'offline',
      address: node.address,
      arch: node.info.arch,
      os: node.info.os,
      runtimes: node.info.runtimes,
      labels: node.info.labels,
      capacity: {
        cpus: node.info.cpus,
        memoryBytes: node.info.memoryBytes,
        gpus: telemetry?.gpus ?? node.info.gpus,
      },
      allocated: allocations.get(node.id) ?? { cpus: 0, memoryBytes: 0, gpus: 0 },
      usage: {
        cpuPercent: telemetry?.cpu.percent ?? null,
        memoryPercent: telemetry?.memory.percent ?? null,
        diskPercent: telemetry?.disk.percent ?? null,
      },
      sensors: node.info.sensors,
      overlay: node.info.overlay,
      ...(node.subnet ? { subnet: node.subnet } : {}),
      ...(node.publicIp && node.udpPort
        ? { overlayEndpoint: { publicIp: node.publicIp, udpPort: node.udpPort } }
        : {}),
      version: node.info.version,
      registeredAt: node.registeredAt,
      lastSeen: liveness.lastSeenAt(node.id),
    };
  });
}
