import type { Logger, NodeTelemetry } from '../../shared/index.js';
import type { Store } from '../store/index.js';
import { StallClock } from './stall-clock.js';

export interface LivenessEvents {
  onOnline(nodeId: string): void;
  onOffline(nodeId: string, reason: string): void;
  /** A mass silence began (`true`) or ended: while it lasts, nothing fails over. */
  onFailoverPaused?(paused: boolean): void;
}

export interface LivenessOptions {
  /** `--node-timeout`: silence longer than this takes a node offline. */
  timeoutMs: number;
  /**
   * When at least this share of the online nodes is quiet at once (and at least MASS_SILENCE_MIN_NODES), the
   * trouble is on the control side (broker, network, this process): failover pauses until it passes.
   */
  massSilenceShare?: number;
  /** Wall clock, for tests. */
  wallClock?: () => number;
  /** How far behind the control pipeline runs (ControlLag): added to every node's allowance. */
  controlLagMs?: () => number;
}

const PERSIST_EVERY_MS = 10_000;
/**
 * A last will counts once the node stayed away this long: a link that blips and reconnects at once (flaky
 * Wi-Fi, a broker failover) must not send its instances elsewhere and back.
 */
export const LAST_WILL_GRACE_MS = 1000;
/** How long a node that just registered has to be heard over MQTT (see registered()). */
export const REGISTRATION_GRACE_MS = 60_000;
/** Kubernetes' unhealthy-zone threshold: more than this share of nodes quiet at once is not their fault. */
export const MASS_SILENCE_SHARE = 0.55;
/** Fewer quiet nodes than this are judged one by one, whatever their share (a 2-node cluster losing one). */
export const MASS_SILENCE_MIN_NODES = 3;

/**
 * Which nodes are online. A node is online from registration or telemetry until it sends nothing for
 * `--node-timeout` or its MQTT last will fires. Latest telemetry lives in memory and reaches SQLite at most
 * every 10 s per node: a write per message would cost an fsync each.
 *
 * Two guards against the cluster manager's own trouble:
 * - silence is measured on a StallClock: time this process's event loop stood still (it could read no message)
 *   is not silence of the nodes, so a stall takes no node offline;
 * - a mass silence pauses failover: when a large share of the online nodes is quiet (silent for half the
 *   timeout, or gone by last will) at the same time, the fault is almost surely on the control side (the broker,
 *   its network, this process falling behind its messages), as Kubernetes judges an unhealthy zone. Nodes still
 *   go offline as they pass the timeout (that is what the cluster manager sees), but no instance is moved
 *   (`failoverPaused`), and an event and a metric say so, until fewer than the threshold are still away.
 */
export class NodeLiveness {
  /** Wall time of the last message from each node, for people and for SQLite. */
  private readonly lastSeen = new Map<string, number>();
  /** The same on the stall clock, for judging silence. */
  private readonly heardAt = new Map<string, number>();
  private readonly online = new Set<string>();
  private readonly telemetry = new Map<string, NodeTelemetry>();
  private readonly persistedAt = new Map<string, number>();
  private readonly dirty = new Set<string>();
  private readonly wentOffline = new Map<string, number>();
  /** Last wills heard, with when (stall clock, before the control lag) each counts unless the node is heard. */
  private readonly lastWills = new Map<string, number>();
  /**
   * Until when (stall clock) a node's last will is not believed: while the whole fleet reconnects at once (after
   * this process restarted or got its broker link back), clients that time out their CONNACK connect again under
   * the same client id, and the broker publishes the will of the connection it drops although the node is fine.
   * Only silence for the node timeout counts then. A single node that registers keeps the quick will.
   */
  private readonly willsVoidUntil = new Map<string, number>();
  /** The cluster manager's own link to the broker is down: it cannot hear any node, so it judges none. */
  private brokerLinkDown = false;
  /** A mass silence under way: since when, how many nodes were online then, which nodes went quiet in it. */
  private massSilence: { since: number; fleet: number; nodes: Set<string> } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly timeoutMs: number;
  private readonly massSilenceShare: number;
  private readonly wallClock: () => number;
  private readonly controlLagMs: () => number;
  readonly clock: StallClock;

  constructor(
    private readonly store: Store,
    options: LivenessOptions,
    private readonly events: LivenessEvents,
    private readonly logger: Logger,
  ) {
    this.timeoutMs = options.timeoutMs;
    this.massSilenceShare = options.massSilenceShare ?? MASS_SILENCE_SHARE;
    this.wallClock = options.wallClock ?? Date.now;
    this.controlLagMs = options.controlLagMs ?? (() => 0);
    this.clock = new StallClock(100, this.wallClock);
    // After a restart of the cluster manager, nodes that were online have the registration grace to report in:
    // the whole fleet reconnects at once (with the embedded broker, to a broker that just started), as
    // Kubernetes grants nodes a startup grace.
    const now = this.wallClock();
    const heard = this.clock.now() + this.reconnectCredit();
    const graceEnds = this.clock.now() + REGISTRATION_GRACE_MS;
    for (const node of store.nodes.list()) {
      if (node.telemetry) this.telemetry.set(node.id, node.telemetry);
      if (node.status === 'online') {
        this.online.add(node.id);
        this.lastSeen.set(node.id, now);
        this.heardAt.set(node.id, heard);
        this.willsVoidUntil.set(node.id, graceEnds);
      } else {
        this.wentOffline.set(node.id, node.lastSeen ?? node.registeredAt);
      }
    }
  }

  start(): void {
    this.clock.start();
    this.timer ??= setInterval(() => this.sweep(), Math.max(100, Math.min(250, this.timeoutMs / 4)));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.clock.stop();
    this.persist(true);
  }

  isOnline = (nodeId: string): boolean => this.online.has(nodeId);

  get onlineCount(): number {
    return this.online.size;
  }

  /** How far behind the control pipeline runs now, in ms (see ControlLag). */
  get controlLag(): number {
    return this.controlLagMs();
  }

  /** Whether a mass silence is under way: failover waits until it passes. */
  get failoverPaused(): boolean {
    return this.massSilence !== undefined;
  }

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
  seen(nodeId: string): void {
    this.lastSeen.set(nodeId, this.wallClock());
    this.heardAt.set(nodeId, this.clock.now());
    // Heard after its last will: the link came back within the grace.
    this.lastWills.delete(nodeId);
    if (this.online.has(nodeId)) return;
    this.online.add(nodeId);
    this.wentOffline.delete(nodeId);
    this.store.nodes.setStatus(nodeId, 'online');
    this.store.events.record('node.online', `node ${this.store.nodes.nameOf(nodeId)} online`, { nodeId });
    this.logger.info({ nodeId }, 'node online');
    this.events.onOnline(nodeId);
  }

  /**
   * The node registered: online, and it has REGISTRATION_GRACE_MS (not just the timeout) to be heard over MQTT.
   * A whole fleet registering at once (after an outage of the cluster manager or of the network) may wait a
   * while for the broker to take its connections; that wait is not silence.
   */
  registered(nodeId: string): void {
    this.seen(nodeId);
    this.heardAt.set(nodeId, this.clock.now() + this.reconnectCredit());
  }

  /** What the registration grace adds to the timeout, for a node that (re)connects with the whole fleet. */
  private reconnectCredit(): number {
    return Math.max(0, REGISTRATION_GRACE_MS - this.timeoutMs);
  }

  recordTelemetry(nodeId: string, telemetry: NodeTelemetry): void {
    this.telemetry.set(nodeId, telemetry);
    this.dirty.add(nodeId);
    this.seen(nodeId);
  }

  /**
   * The broker published the node's last will: offline, unless it is heard again within LAST_WILL_GRACE_MS (plus
   * the control lag). Within the grace after the whole fleet reconnected (this process restarted or got its broker
   * link back), a will is not believed at all: a client that times out its CONNACK while thousands connect
   * connects again, and the broker may publish the will of the connection it dropped although the node is fine
   * (the embedded broker drops the wills of connections taken over; another broker may not). Only silence for the
   * node timeout counts then.
   */
  lastWill(nodeId: string): void {
    const now = this.clock.now();
    if (!this.online.has(nodeId) || now < (this.willsVoidUntil.get(nodeId) ?? 0)) return;
    this.willsVoidUntil.delete(nodeId);
    this.lastWills.set(nodeId, now + LAST_WILL_GRACE_MS);
  }

  /**
   * The cluster manager lost its own broker link. Silence from the nodes says nothing about them meanwhile, and
   * a broker that shuts down publishes the last will of every client it drops, nodes that are fine included:
   * no node goes offline for either until the link is back.
   */
  brokerDisconnected(): void {
    this.brokerLinkDown = true;
  }

  /**
   * The link is back: wills heard around the outage are void, and every online node has the registration grace
   * to be heard again (the whole fleet reconnects to the broker at once).
   */
  brokerConnected(): void {
    if (!this.brokerLinkDown) return;
    this.brokerLinkDown = false;
    this.lastWills.clear();
    const heard = this.clock.now() + this.reconnectCredit();
    const graceEnds = this.clock.now() + REGISTRATION_GRACE_MS;
    for (const nodeId of this.online) {
      this.heardAt.set(nodeId, Math.max(heard, this.heardAt.get(nodeId) ?? 0));
      this.willsVoidUntil.set(nodeId, graceEnds);
    }
  }

  /** The node was removed: nothing about it is judged, kept or counted any more (and no event says offline). */
  forget(nodeId: string): void {
    for (const map of [
      this.lastSeen,
      this.heardAt,
      this.telemetry,
      this.persistedAt,
      this.wentOffline,
      this.lastWills,
      this.willsVoidUntil,
    ])
      map.delete(nodeId);
    this.online.delete(nodeId);
    this.dirty.delete(nodeId);
    this.massSilence?.nodes.delete(nodeId);
  }

  markOffline(nodeId: string, reason: string): void {
    if (!this.online.delete(nodeId)) return;
    this.wentOffline.set(nodeId, this.wallClock());
    this.store.nodes.setStatus(nodeId, 'offline');
    this.store.events.record('node.offline', `node ${this.store.nodes.nameOf(nodeId)} offline: ${reason}`, {
      nodeId,
    });
    this.logger.warn({ nodeId, reason }, 'node offline');
    this.events.onOffline(nodeId, reason);
  }

  /** Judges every online node; runs every few hundred ms (public for tests). */
  sweep(): void {
    const now = this.clock.now();
    if (this.brokerLinkDown) {
      this.persist(false);
      return;
    }
    const goingOffline = new Map<string, string>();
    const quiet: string[] = [];
    // A message in the cluster manager's own backlog (broker, client, event loop) is not a node's silence.
    const lag = this.controlLagMs();
    for (const nodeId of this.online) {
      const heard = this.heardAt.get(nodeId) ?? 0;
      const silent = now - heard;
      const silence = silent - lag;
      const willCountsAt = this.lastWills.get(nodeId);
      // A will waits out the control lag too: the node's reconnect is in the same backlog.
      const willCounts = willCountsAt !== undefined && now >= willCountsAt + lag;
      if (willCounts) goingOffline.set(nodeId, 'MQTT last will');
      else if (silence > this.timeoutMs) goingOffline.set(nodeId, `no telemetry for ${silent} ms`);
      if (goingOffline.has(nodeId) || silence > this.timeoutMs / 2) quiet.push(nodeId);
    }
    this.judgeMassSilence(quiet);
    for (const [nodeId, reason] of goingOffline) {
      this.lastWills.delete(nodeId);
      this.markOffline(nodeId, reason);
    }
    this.persist(false);
  }

  /**
   * Starts, follows or ends a mass silence. It starts when the quiet online nodes reach the threshold; it ends
   * when fewer of the nodes it took in than the threshold (of the fleet online when it started) are still away.
   */
  private judgeMassSilence(quiet: string[]): void {
    const massive = (count: number, of: number) =>
      count >= MASS_SILENCE_MIN_NODES && count >= this.massSilenceShare * of;
    const episode = this.massSilence;
    if (!episode) {
      if (!massive(quiet.length, this.online.size)) return;
      this.massSilence = { since: this.wallClock(), fleet: this.online.size, nodes: new Set(quiet) };
      const message =
        `${quiet.length} of ${this.online.size} online nodes went quiet at once: taken as trouble on the control ` +
        'side (broker, network, this process falling behind); failover is paused until they are back';
      this.logger.warn({ quiet: quiet.length, online: this.online.size }, message);
      this.store.events.record('failover.paused', message);
      this.events.onFailoverPaused?.(true);
      return;
    }
    for (const nodeId of quiet) episode.nodes.add(nodeId);
    const quietNow = new Set(quiet);
    let away = 0;
    for (const nodeId of episode.nodes) if (!this.online.has(nodeId) || quietNow.has(nodeId)) away++;
    if (massive(away, episode.fleet)) return;
    this.massSilence = undefined;
    const message =
      `failover resumed after a mass silence of ${this.wallClock() - episode.since} ms: ` +
      `${away} of the ${episode.nodes.size} nodes that went quiet are still away`;
    this.logger.info(message);
    this.store.events.record('failover.resumed', message);
    this.events.onFailoverPaused?.(false);
  }

  private persist(all: boolean): void {
    const now = this.wallClock();
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
