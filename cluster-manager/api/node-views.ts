import type { NodeTelemetry, NodeView } from '../../shared/index.js';
import type { NodeLiveness } from '../liveness/node-liveness.js';
import { labelsOf, type NodeRecord } from '../store/index.js';

/** What each node has allocated, by node id, as the scheduler keeps it (Placement.schedulableNodesById). */
export type Allocations = () => ReadonlyMap<string, { allocated: NodeView['allocated'] }>;

export function nodeViews(liveness: NodeLiveness, allocations: Allocations, nodes: NodeRecord[]): NodeView[] {
  const byId = allocations();
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
      labels: labelsOf(node),
      operatorLabels: node.operatorLabels,
      cordoned: node.cordoned,
      draining: node.draining,
      capacity: {
        cpus: node.info.cpus,
        memoryBytes: node.info.memoryBytes,
        gpus: telemetry?.gpus ?? node.info.gpus,
      },
      allocated: { ...(byId.get(node.id)?.allocated ?? { cpus: 0, memoryBytes: 0, gpus: 0 }) },
      usage: {
        cpuPercent: telemetry?.cpu.percent ?? null,
        memoryPercent: telemetry?.memory.percent ?? null,
        diskPercent: telemetry?.disk.percent ?? null,
      },
      sensors: node.info.sensors,
      overlay: node.info.overlay,
      ...(node.subnet ? { subnet: node.subnet } : {}),
      ...(node.publicIp && node.udpPort
        ? {
            overlayEndpoint: {
              publicIp: node.publicIp,
              udpPort: node.udpPort,
              ...(node.overlayKey ? { publicKey: node.overlayKey } : {}),
            },
          }
        : {}),
      version: node.info.version,
      registeredAt: node.registeredAt,
      lastSeen: liveness.lastSeenAt(node.id),
    };
  });
}
