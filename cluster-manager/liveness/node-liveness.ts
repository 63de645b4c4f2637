import type { Logger, NodeTelemetry } from '../../shared/index.js';
import type { Store } from '../store/index.js';

export interface LivenessEvents {
  onOnline(nodeId: string): void;
  onOffline(nodeId: string, reason: string): void;
}

const PERSIST_EVERY_MS = 10_000;
/**
 * A last will counts once the node stayed away this long: a link that blips and reconnects at once (flaky
 * Wi-Fi, a broker failover) must not send its instances elsewhere and back.
 */
export const LAST_WILL_GRACE_MS = 1000;

/**
 * Which nodes are online. A node is online from registration or telemetry until it sends nothing for
 * `--node-timeout` or its MQTT last will fires. Latest telemetry lives in memory and reaches SQLite at most
 * every 10 s per node: a write per message would cost an fsync each.
 */
export class NodeLiveness {
  private readonly lastSeen = new Map<string, number>();
  private readonly online = new Set<string>();
  private readonly telemetry = new Map<string, NodeTelemetry>();
  private readonly persistedAt = new Map<string, number>();
  private readonly dirty = new Set<string>();
  private readonly wentOffline = new Map<string, number>();
  private readonly lastWills = new Map<string, number>();
  /** The cluster manager's own link to the broker is down: it cannot hear any node, so it judges none. */
  private brokerLinkDown = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly timeoutMs: number,
    private readonly events: LivenessEvents,
    private readonly logger: Logger,
  ) {
    // After a restart of the cluster manager, nodes that were online get one full timeout to report in.
    const now = Date.now();
    for (const node of store.nodes.list()) {
      if (node.telemetry) this.telemetry.set(node.id, node.telemetry);
      if (node.status === 'online') {
        this.online.add(node.id);
        this.lastSeen.set(node.id, now);
      } else {
        this.wentOffline.set(node.id, node.lastSeen ?? node.registeredAt);
      }
    }
  }

  start(): void {
    this.timer ??= setInterval(() => this.sweep(), Math.max(100, Math.min(250, this.timeoutMs / 4)));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.persist(true);
  }

  isOnline = (nodeId: string): boolean => this.online.has(nodeId);

  latestTelemetry(nodeId: string): NodeTelemetry | undefined {
    return this.telemetry.get(nodeId);
  }

  /** When the node went offline; undefined while it is online. */
  offlineSince = (nodeId: string): number | undefined =>
    this.online.has(nodeId) ? undefined : (this.wentOffline.get(nodeId) ?? this.lastSeen.get(nodeId) ?? 0);

  lastSeenAt(nodeId: string): number | null {
    return this.lastSeen.get(nodeId) ?? this.store.nodes.get(nodeId)?.lastSeen ?? null;
  }

  /** Registration, telemetry or any message from the node. */
  seen(nodeId: string, now = Date.now()): void {
    this.lastSeen.set(nodeId, now);
    if (this.online.has(nodeId)) return;
    this.online.add(nodeId);
    this.wentOffline.delete(nodeId);
    this.store.nodes.setStatus(nodeId, 'online');
    this.store.events.record('node.online', `node ${this.store.nodes.nameOf(nodeId)} online`, { nodeId });
    this.logger.info({ nodeId }, 'node online');
    this.events.onOnline(nodeId);
  }

  recordTelemetry(nodeId: string, telemetry: NodeTelemetry, now = Date.now()): void {
    this.telemetry.set(nodeId, telemetry);
    this.dirty.add(nodeId);
    this.seen(nodeId, now);
  }

  /** The broker published the node's last will: offline, unless it is back within the grace. */
  lastWill(nodeId: string, now = Date.now()): void {
    if (this.online.has(nodeId)) this.lastWills.set(nodeId, now);
  }

  /**
   * The cluster manager lost its own broker link. Silence from the nodes says nothing about them meanwhile, and
   * a broker that shuts down publishes the last will of every client it drops, nodes that are fine included:
   * no node goes offline for either until the link is back.
   */
  brokerDisconnected(): void {
    this.brokerLinkDown = true;
  }

  /** The link is back: wills heard around the outage are void, and every online node gets a full timeout. */
  brokerConnected(now = Date.now()): void {
    if (!this.brokerLinkDown) return;
    this.brokerLinkDown = false;
    this.lastWills.clear();
    for (const nodeId of this.online)
      this.lastSeen.set(nodeId, Math.max(now, this.lastSeen.get(nodeId) ?? 0));
  }

  markOffline(nodeId: string, reason: string): void {
    if (!this.online.delete(nodeId)) return;
    this.wentOffline.set(nodeId, Date.now());
    this.store.nodes.setStatus(nodeId, 'offline');
    this.store.events.record('node.offline', `node ${this.store.nodes.nameOf(nodeId)} offline: ${reason}`, {
      nodeId,
    });
    this.logger.warn({ nodeId, reason }, 'node offline');
    this.events.onOffline(nodeId, reason);
  }

  private sweep(now = Date.now()): void {
    if (this.brokerLinkDown) {
      this.persist(false, now);
      return;
    }
    for (const [nodeId, willAt] of this.lastWills) {
      if (now - willAt < LAST_WILL_GRACE_MS) continue;
      this.lastWills.delete(nodeId);
      if ((this.lastSeen.get(nodeId) ?? 0) <= willAt) this.markOffline(nodeId, 'MQTT last will');
    }
    for (const nodeId of [...this.online]) {
      const seen = this.lastSeen.get(nodeId) ?? 0;
      if (now - seen > this.timeoutMs) this.markOffline(nodeId, `no telemetry for ${now - seen} ms`);
    }
    this.persist(false, now);
  }

  private persist(all: boolean, now = Date.now()): void {
    const due = [...this.dirty].filter(
      (nodeId) => all || now - (this.persistedAt.get(nodeId) ?? 0) >= PERSIST_EVERY_MS,
    );
    if (due.length === 0) return;
    this.store.transaction(() => {
      for (const nodeId of due) {
        const telemetry = this.telemetry.get(nodeId);
        if (telemetry) this.store.nodes.recordTelemetry(nodeId, telemetry, this.lastSeen.get(nodeId) ?? now);
        this.persistedAt.set(nodeId, now);
        this.dirty.delete(nodeId);
      }
    });
  }
}
