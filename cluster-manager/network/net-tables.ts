import {
  type InstanceRoute,
  type JobRouteTable,
  type Logger,
  type MqttClient,
  type NetAnnounce,
  type NetQuery,
  type NetTable,
  type RouteTableInstance,
  topics,
  unreachableFromPeers,
} from '../../shared/index.js';
import type { JobRecord, NodeRecord, Store } from '../store/index.js';
import type { RelayDirectory } from './relay-directory.js';

/** A job's table without the fields of one message (`ts`, `query`): what is compared to see a change. */
type TableContent = Omit<JobRouteTable, 'ts' | 'query'>;

export interface NetTablesOptions {
  store: Store;
  isOnline(nodeId: string): boolean;
  logger: Logger;
  /** Where the relay reaches each node (its announced key and reflexive address). */
  relays?: RelayDirectory;
  /** Counts every table sent: an answer to a query or a push after a change. */
  sent?(kind: 'answer' | 'push', table: NetTable['kind']): void;
  /** Changes within this window go out as one push per job. */
  debounceMs?: number;
  /** The safety sweep: expires interest and pushes whatever differs from what was last pushed. */
  sweepMs?: number;
  /** Interest not refreshed by a query for this long is dropped (net managers re-query what they use). */
  interestTtlMs?: number;
}

/**
 * A query refreshes interest in SQLite at most this often per node and job: net managers re-query every few
 * minutes, and each write costs an fsync.
 */
const INTEREST_WRITE_EVERY_MS = 10 * 60_000;

/**
 * The cluster manager's side of the overlay's route tables (`nodes/<id>/net/...`). Net managers announce their
 * endpoint and ask which job owns an overlay address; the answer is the job's whole table, and the node is
 * remembered as interested in that job. Whenever the table of a job changes, every interested node gets it
 * pushed; a job that goes away is pushed as `removed`, and again on the node's next announce: a net manager
 * offline then missed the push, and its queries cannot tell it (a freed address is missing or another job's).
 *
 * Changes are seen at one place: the stores' change feeds (every write of a job or instance row; a node's
 * status or endpoint). A change only marks the job dirty; after a short debounce the table is rebuilt and
 * compared with the digest of the one last pushed, so bursts go out once and writes that change nothing for
 * routing (telemetry, details) send nothing. A periodic sweep compares every table with interest, which also
 * heals a push that was lost or a change made while the cluster manager was down.
 */
export class NetTables {
  private mqtt: MqttClient | undefined;
  private readonly dirtyJobs = new Set<string>();
  private readonly dirtyNodes = new Set<string>();
  private debounce: NodeJS.Timeout | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  /** When the interest of `node/job` was last written to SQLite. */
  private readonly interestWrittenAt = new Map<string, number>();
  /** The endpoint last refused per node: the event and log line are not repeated on every reconnect. */
  private readonly refusedEndpoints = new Map<string, string>();
  private readonly unsubscribe: (() => void)[];
  private readonly debounceMs: number;
  private readonly sweepMs: number;
  private readonly interestTtlMs: number;

  constructor(private readonly options: NetTablesOptions) {
    this.debounceMs = options.debounceMs ?? 20;
    this.sweepMs = options.sweepMs ?? 30_000;
    this.interestTtlMs = options.interestTtlMs ?? 3600_000;
    const { store } = options;
    this.unsubscribe = [
      store.jobs.changes.subscribe((jobId) => this.changed(this.dirtyJobs, jobId)),
      store.nodes.changes.subscribe((nodeId) => this.changed(this.dirtyNodes, nodeId)),
    ];
  }

  /** Starts pushing through this client; every (re)connect runs a sweep for what changed meanwhile. */
  attach(mqtt: MqttClient): void {
    this.mqtt = mqtt;
    mqtt.on('connect', () => this.sweep());
    this.sweeper ??= setInterval(() => this.sweep(), this.sweepMs);
  }

  stop(): void {
    clearInterval(this.sweeper);
    clearTimeout(this.debounce);
    this.sweeper = undefined;
    this.debounce = undefined;
    for (const unsubscribe of this.unsubscribe) unsubscribe();
  }

  /** A net manager (re)connected: store its endpoint, and send it every table it uses (it may have missed pushes). */
  onAnnounce(nodeId: string, announce: NetAnnounce, now = Date.now()): void {
    const { store, logger } = this.options;
    const node = store.nodes.get(nodeId);
    if (!node) return;
    const endpoint = `${announce.publicIp}:${announce.udpPort}`;
    const unreachable = unreachableFromPeers(announce.publicIp);
    if (unreachable) {
      this.refuseEndpoint(node, endpoint, unreachable);
    } else {
      this.refusedEndpoints.delete(nodeId);
      const key = announce.publicKey ?? null;
      const candidates = (announce.candidates ?? []).filter(
        (candidate) => !unreachableFromPeers(candidate.ip),
      );
      if (store.nodes.setEndpoint(nodeId, announce.publicIp, announce.udpPort, key, candidates)) {
        logger.info({ nodeId, endpoint, publicKey: key, candidates }, 'overlay endpoint of a node');
        store.events.record(
          'node.endpoint',
          `node ${node.name} overlay endpoint ${endpoint}${key ? `, key ${key}` : ', no key'}`,
          { nodeId },
        );
      }
    }
    const relayAt = announce.reflexive ?? { ip: announce.publicIp, port: announce.udpPort };
    if (announce.publicKey && !unreachableFromPeers(relayAt.ip))
      this.options.relays?.set(nodeId, announce.publicKey, relayAt);
    if (announce.subnet && announce.subnet !== node.subnet) {
      logger.warn(
        { nodeId, announced: announce.subnet, assigned: node.subnet },
        'a net manager uses another subnet than the one its node was given',
      );
    }
    this.resync(nodeId, now);
  }

  /**
   * An endpoint no other worker could send to (loopback, ...) is never routed to: the node keeps the endpoint it
   * had, if any, and the operator is told what to set.
   */
  private refuseEndpoint(node: NodeRecord, endpoint: string, unreachable: string): void {
    if (this.refusedEndpoints.get(node.id) === endpoint) return;
    this.refusedEndpoints.set(node.id, endpoint);
    const message =
      `node ${node.name} announced overlay endpoint ${endpoint}, ${unreachable} other workers cannot reach: ` +
      'refused; set NM_PUBLIC_IP (--public-ip) on its net manager to an address they can reach';
    this.options.logger.warn({ nodeId: node.id, endpoint }, message);
    this.options.store.events.record('node.endpoint.refused', message, { nodeId: node.id });
  }

  /**
   * Answers on `nodes/<id>/net/table`: for an address, the table of the live job that owns it, or `missing`; for
   * a key, the node that announced it (a `peer`), without `node` when none did.
   */
  onQuery(nodeId: string, query: NetQuery, now = Date.now()): void {
    const { store } = this.options;
    if (!store.nodes.get(nodeId) || !this.mqtt?.connected) return;
    if ('key' in query) {
      const peer = store.nodes.withOverlayKey(query.key);
      const node = peer && peerOf(peer);
      this.send(nodeId, { kind: 'peer', publicKey: query.key, ...(node ? { node } : {}), ts: now }, 'answer');
      // Hole punching: the node it wants to reach reaches out too, which opens its own NAT for the asker.
      const asker = store.nodes.get(nodeId);
      const askerPeer = asker && peerOf(asker);
      if (
        query.punch &&
        peer &&
        peer.id !== nodeId &&
        asker?.overlayKey &&
        askerPeer &&
        this.options.isOnline(peer.id)
      )
        this.send(
          peer.id,
          { kind: 'peer', publicKey: asker.overlayKey, node: askerPeer, punch: true, ts: now },
          'answer',
        );
      return;
    }
    const job = store.jobs.findLiveJobByAddress(query.ip);
    const table = job ? this.tableOf(job) : undefined;
    if (!job || !table) {
      this.send(nodeId, { kind: 'missing', query: query.ip, ts: now }, 'answer');
      return;
    }
    this.remember(nodeId, job.id, now);
    const digest = JSON.stringify(table);
    const pushed = store.netInterest.pushedDigest(job.id);
    // The asker gets the current table now; the others get it too if it differs from their last push.
    if (pushed === undefined) store.netInterest.setPushedDigest(job.id, digest, now);
    else if (pushed !== digest) this.changed(this.dirtyJobs, job.id);
    this.send(nodeId, { ...table, query: query.ip, ts: now }, 'answer');
  }

  /** Pushes the tables of jobs marked changed to the nodes interested in them, when they really changed. */
  flush(now = Date.now()): void {
    clearTimeout(this.debounce);
    this.debounce = undefined;
    // Offline, what is dirty stays dirty: the sweep on reconnecting pushes it.
    if (!this.mqtt?.connected) return;
    const { store } = this.options;
    const jobIds = new Set(this.dirtyJobs);
    for (const nodeId of this.dirtyNodes)
      for (const instance of store.jobs.instancesOnNode(nodeId)) jobIds.add(instance.jobId);
    this.dirtyJobs.clear();
    this.dirtyNodes.clear();
    const wanted = [...jobIds].flatMap((jobId) => {
      const nodes = store.netInterest.nodesInterestedIn(jobId);
      return nodes.length > 0 ? [{ jobId, nodes }] : [];
    });
    if (wanted.length === 0) return;
    store.transaction(() => {
      for (const { jobId, nodes } of wanted) this.push(jobId, nodes, now);
    });
  }

  /** Expires stale interest, then compares every table that has interest with what was last pushed. */
  sweep(now = Date.now()): void {
    const { store, logger } = this.options;
    const expired = store.netInterest.expire(now - this.interestTtlMs);
    if (expired > 0) logger.debug({ expired }, 'expired net table interest');
    for (const [key, at] of this.interestWrittenAt)
      if (now - at >= this.interestTtlMs) this.interestWrittenAt.delete(key);
    for (const jobId of store.netInterest.jobs()) this.dirtyJobs.add(jobId);
    this.flush(now);
  }

  /** The route table of a live job, or undefined when it has no service IP (its overlay is off). */
  private tableOf(job: JobRecord): TableContent | undefined {
    const { store, isOnline } = this.options;
    if (!job.serviceIp) return undefined;
    const nodes = new Map<string, NodeRecord | undefined>();
    const nodeOf = (nodeId: string) => {
      if (!nodes.has(nodeId)) nodes.set(nodeId, store.nodes.get(nodeId));
      return nodes.get(nodeId);
    };
    const instances: RouteTableInstance[] = [];
    for (const instance of store.jobs.instancesOf(job.id)) {
      if (!instance.instanceIp) continue;
      let route: InstanceRoute | undefined;
      const node = instance.nodeId ? nodeOf(instance.nodeId) : undefined;
      if (
        instance.status === 'running' &&
        instance.namespaceIp &&
        node?.publicIp &&
        node.udpPort &&
        isOnline(node.id)
      ) {
        route = {
          nodeId: node.id,
          namespaceIp: instance.namespaceIp,
          publicIp: node.publicIp,
          udpPort: node.udpPort,
          ...(node.overlayKey ? { publicKey: node.overlayKey } : {}),
          ...(node.overlayCandidates.length > 0 ? { candidates: node.overlayCandidates } : {}),
        };
      }
      instances.push({
        number: instance.number,
        instanceIp: instance.instanceIp,
        ...(route ? { route } : {}),
      });
    }
    return { kind: 'job', jobId: job.id, jobName: job.name, serviceIp: job.serviceIp, instances };
  }

  private changed(dirty: Set<string>, id: string): void {
    dirty.add(id);
    this.debounce ??= setTimeout(() => this.flush(), this.debounceMs);
  }

  private push(jobId: string, nodes: string[], now: number): void {
    const { store } = this.options;
    const table = this.liveTableOrRemoved(jobId, nodes, now);
    if (!table) {
      // A net manager offline now missed that (its session is clean): its next announce tells it again.
      store.netInterest.markJobRemoved(jobId, now);
      return;
    }
    const digest = JSON.stringify(table);
    if (digest === store.netInterest.pushedDigest(jobId)) return;
    store.netInterest.setPushedDigest(jobId, digest, now);
    for (const nodeId of nodes) {
      this.send(nodeId, { ...table, ts: now }, 'push', () =>
        // A digest that matches nothing: the next sweep pushes the table again.
        store.netInterest.setPushedDigest(jobId, '', Date.now()),
      );
    }
  }

  /** Every table the node uses, and `removed` for those it used that went away, sent to it alone. */
  private resync(nodeId: string, now: number): void {
    const { store } = this.options;
    if (!this.mqtt?.connected) return;
    for (const jobId of store.netInterest.jobsOf(nodeId)) {
      const table = this.liveTableOrRemoved(jobId, [nodeId], now);
      if (table) this.send(nodeId, { ...table, ts: now }, 'push');
      else store.netInterest.forget(nodeId, jobId);
    }
  }

  /**
   * The table of the job while it is active; when it is deleting or gone, `nodes` are sent `removed` (its
   * addresses are no longer routed, and will be handed out again) and undefined is returned.
   */
  private liveTableOrRemoved(jobId: string, nodes: string[], now: number): TableContent | undefined {
    const job = this.options.store.jobs.getJob(jobId);
    const table = job?.state === 'active' ? this.tableOf(job) : undefined;
    if (!table) {
      for (const nodeId of nodes) {
        this.send(nodeId, { kind: 'removed', jobId, ts: now }, 'push');
        this.interestWrittenAt.delete(`${nodeId}/${jobId}`);
      }
    }
    return table;
  }

  private remember(nodeId: string, jobId: string, now: number): void {
    const key = `${nodeId}/${jobId}`;
    const writtenAt = this.interestWrittenAt.get(key);
    if (writtenAt !== undefined && now - writtenAt < INTEREST_WRITE_EVERY_MS) return;
    this.options.store.netInterest.record(nodeId, jobId, now);
    this.interestWrittenAt.set(key, now);
  }

  private send(nodeId: string, table: NetTable, kind: 'answer' | 'push', onError?: () => void): void {
    this.options.sent?.(kind, table.kind);
    this.mqtt?.publish(topics.netTable(nodeId), JSON.stringify(table), { qos: 1 }, (error) => {
      if (!error) return;
      this.options.logger.warn({ nodeId, err: error.message }, 'net table publish failed');
      try {
        onError?.();
      } catch (failure) {
        // Shutting down: the store may be closed already. The sweep after the next start pushes it.
        this.options.logger.debug({ err: (failure as Error).message }, 'could not mark a net table unsent');
      }
    });
  }
}

/** A node as a `peer` table names it: where to reach it; undefined before its net manager announced itself. */
function peerOf(node: NodeRecord) {
  if (!node.publicIp || !node.udpPort) return undefined;
  return {
    nodeId: node.id,
    publicIp: node.publicIp,
    udpPort: node.udpPort,
    ...(node.overlayCandidates.length > 0 ? { candidates: node.overlayCandidates } : {}),
  };
}
