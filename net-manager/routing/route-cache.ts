import { ipToNumber, numberToIp } from '../../shared/ipv4.js';
import { monotonicMs } from '../../shared/monotonic-clock.js';
import type { JobRouteTable, RouteTableInstance } from '../../shared/net.js';

/**
 * The route tables this worker asked the cluster manager for, indexed by overlay address (service IPs and
 * instance IPs) as numbers, so that the forwarder resolves a destination with one Map lookup and no strings.
 * Entries stay while packets use them, also while the cluster manager is unreachable, and go when idle.
 */

/** Where an instance runs now. */
export interface CachedRoute {
  readonly nodeId: string;
  /** On this worker: packets to it loop back into the local TUN instead of crossing the network. */
  local: boolean;
  readonly namespaceIp: number;
  readonly publicIp: number;
  readonly udpPort: number;
  /** The worker's overlay key (base64), null when its net manager announced none. */
  readonly publicKey: string | null;
  /** Its other endpoints (local addresses, its NAT's mapping), as [ip, port] pairs: handshakes try them all. */
  readonly candidates: readonly (readonly [number, number])[];
  /** The endpoint and candidates in one string: what a peer compares to see that they changed. */
  readonly endpointsKey: string;
}

export interface CachedInstance {
  readonly number: number;
  readonly instanceIp: number;
  /** Null while the instance does not run. */
  readonly route: CachedRoute | null;
}

export interface CachedJob {
  readonly jobId: string;
  readonly jobName: string;
  readonly serviceIp: number;
  readonly instances: readonly CachedInstance[];
  /** Running instances on this worker, then those elsewhere: the targets a service IP balances across. */
  localTargets: CachedInstance[];
  remoteTargets: CachedInstance[];
  nextLocal: number;
  nextRemote: number;
  /** When a packet last resolved one of the job's addresses (or the table first arrived). */
  lastUsed: number;
  updatedAt: number;
}

export interface ServiceAddress {
  readonly kind: 'service';
  readonly ip: number;
  readonly job: CachedJob;
}

export interface InstanceAddress {
  readonly kind: 'instance';
  readonly ip: number;
  readonly job: CachedJob;
  readonly instance: CachedInstance;
}

/** A negative entry: a query is under way (`pending`) or the cluster manager said no job owns it (`missing`). */
export interface UnresolvedAddress {
  readonly kind: 'pending' | 'missing';
  readonly ip: number;
  /** When the entry was made: for `missing`, when the cluster manager's answer arrived. */
  readonly at: number;
  readonly expiresAt: number;
}

export type AddressLookup = ServiceAddress | InstanceAddress | UnresolvedAddress;

/** When the cluster manager's answer behind a lookup arrived (the job's table, or the `missing`). */
export function answeredAt(lookup: AddressLookup): number {
  return lookup.kind === 'service' || lookup.kind === 'instance' ? lookup.job.updatedAt : lookup.at;
}

/** A cached job in dotted-quad form, for status and debugging (not for the data path). */
export interface CachedJobView {
  jobId: string;
  jobName: string;
  serviceIp: string;
  lastUsed: number;
  updatedAt: number;
  instances: {
    number: number;
    instanceIp: string;
    route: {
      nodeId: string;
      local: boolean;
      namespaceIp: string;
      publicIp: string;
      udpPort: number;
      publicKey: string | null;
      candidates: string[];
    } | null;
  }[];
}

export interface RouteCacheOptions {
  /** This worker's node id; routes naming it are local. May be set later with `setLocalNodeId`. */
  localNodeId?: string | null;
  /** Entries unused for this long are dropped by `expire` (default 10 min). */
  idleMs?: number;
  /** How long a `missing` answer holds before the address may be queried again (default 3 s). */
  missingTtlMs?: number;
  /** How long a query may stay unanswered before the address may be queried again (default 3 s). */
  pendingTtlMs?: number;
  /** Bound on negative entries; the oldest goes first (default 10,000). */
  maxUnresolved?: number;
  now?: () => number;
}

export class RouteCache {
  private readonly jobs = new Map<string, CachedJob>();
  private readonly addresses = new Map<number, ServiceAddress | InstanceAddress>();
  private readonly unresolved = new Map<number, UnresolvedAddress>();
  /** Overlay endpoints (`publicIp * 65536 + udpPort`) of the workers the cached instances run on, with a count. */
  private readonly peers = new Map<number, number>();
  private localNodeId: string | null;
  /**
   * Told every overlay address whose answer changed (another route, another job, gone): what was decided from
   * the old answer (the fast path's flows) must be forgotten.
   */
  onAddressChanged: ((ip: number) => void) | null = null;
  private readonly idleMs: number;
  private readonly missingTtlMs: number;
  private readonly pendingTtlMs: number;
  private readonly maxUnresolved: number;
  readonly now: () => number;

  constructor(options: RouteCacheOptions = {}) {
    this.localNodeId = options.localNodeId ?? null;
    this.idleMs = options.idleMs ?? 10 * 60_000;
    this.missingTtlMs = options.missingTtlMs ?? 3000;
    this.pendingTtlMs = options.pendingTtlMs ?? 3000;
    this.maxUnresolved = options.maxUnresolved ?? 10_000;
    this.now = options.now ?? monotonicMs;
  }

  /** Number of jobs cached. */
  get size(): number {
    return this.jobs.size;
  }

  /** Sets which routes are local (the node id arrives after start) and re-sorts every job's targets. */
  setLocalNodeId(nodeId: string | null): void {
    this.localNodeId = nodeId;
    for (const job of this.jobs.values()) {
      for (const instance of job.instances) {
        if (instance.route) instance.route.local = instance.route.nodeId === nodeId;
      }
      sortTargets(job);
      this.changed(job);
    }
  }

  /** Replaces the job's entry with `table` and indexes its service IP and every instance IP. */
  apply(table: JobRouteTable, now = this.now()): CachedJob {
    const previous = this.jobs.get(table.jobId);
    const before = this.onAddressChanged ? this.answers(table, previous) : null;
    if (previous) this.unindex(previous);
    const job: CachedJob = {
      jobId: table.jobId,
      jobName: table.jobName,
      serviceIp: ipToNumber(table.serviceIp),
      instances: table.instances.map((instance) => this.toCachedInstance(instance)),
      localTargets: [],
      remoteTargets: [],
      nextLocal: previous?.nextLocal ?? 0,
      nextRemote: previous?.nextRemote ?? 0,
      lastUsed: previous?.lastUsed ?? now,
      updatedAt: now,
    };
    sortTargets(job);
    this.jobs.set(job.jobId, job);
    this.index(job.serviceIp, { kind: 'service', ip: job.serviceIp, job });
    for (const instance of job.instances) {
      this.index(instance.instanceIp, { kind: 'instance', ip: instance.instanceIp, job, instance });
    }
    this.countPeers(job, 1);
    if (before) {
      // An address that had no answer had nothing decided from it (its removal was told when it went).
      for (const [ip, answer] of before) {
        if (answer !== '' && answerOf(this.addresses.get(ip)) !== answer) this.onAddressChanged?.(ip);
      }
    }
    return job;
  }

  /** What every address of the table (and of the job's previous table) resolves to now, as comparable text. */
  private answers(table: JobRouteTable, previous: CachedJob | undefined): Map<number, string> {
    const ips = [
      ipToNumber(table.serviceIp),
      ...table.instances.map(({ instanceIp }) => ipToNumber(instanceIp)),
    ];
    if (previous) ips.push(previous.serviceIp, ...previous.instances.map(({ instanceIp }) => instanceIp));
    return new Map(ips.map((ip) => [ip, answerOf(this.addresses.get(ip))]));
  }

  /** Tells the listener that every address of the job changed. */
  private changed(job: CachedJob): void {
    const listener = this.onAddressChanged;
    if (!listener) return;
    listener(job.serviceIp);
    for (const instance of job.instances) listener(instance.instanceIp);
  }

  /**
   * Whether tunnel packets from this endpoint come from a worker the cluster manager named in a cached table:
   * the overlay takes packets from those only.
   */
  isPeer(publicIp: number, udpPort: number): boolean {
    return this.peers.has(publicIp * 65536 + udpPort);
  }

  /** Forgets a job and its addresses; false when it was not cached. */
  remove(jobId: string): boolean {
    const job = this.jobs.get(jobId);
    if (!job) return false;
    this.unindex(job);
    this.jobs.delete(jobId);
    this.changed(job);
    return true;
  }

  /** The cluster manager said no job owns `ip`: answer `missing` for a while instead of asking again. */
  markMissing(ip: number, now = this.now()): void {
    this.markUnresolved({ kind: 'missing', ip, at: now, expiresAt: now + this.missingTtlMs });
  }

  /** A query for `ip` is under way: answer `pending` for a while so a burst of packets makes one query. */
  markPending(ip: number, now = this.now()): void {
    this.markUnresolved({ kind: 'pending', ip, at: now, expiresAt: now + this.pendingTtlMs });
  }

  /**
   * What `ip` is: a service or instance address of a cached job (marking the job used), a negative entry, or
   * undefined when nothing is known (the caller queries the cluster manager).
   */
  lookup(ip: number, now = this.now()): AddressLookup | undefined {
    const address = this.addresses.get(ip);
    if (address !== undefined) {
      address.job.lastUsed = now;
      return address;
    }
    const unresolved = this.unresolved.get(ip);
    if (unresolved === undefined) return undefined;
    if (unresolved.expiresAt > now) return unresolved;
    this.unresolved.delete(ip);
    return undefined;
  }

  /**
   * The instance a new flow to the job's service IP goes to: a running one on this worker if any, else one
   * elsewhere, round robin among them; null when none runs.
   */
  chooseInstance(job: CachedJob): CachedInstance | null {
    const local = job.localTargets;
    if (local.length > 0) {
      const index = job.nextLocal % local.length;
      job.nextLocal = index + 1;
      return local[index]!;
    }
    const remote = job.remoteTargets;
    if (remote.length > 0) {
      const index = job.nextRemote % remote.length;
      job.nextRemote = index + 1;
      return remote[index]!;
    }
    return null;
  }

  /** Drops jobs idle for longer than `idleMs` and expired negative entries; returns the dropped job ids. */
  expire(now = this.now()): string[] {
    const dropped: string[] = [];
    for (const job of this.jobs.values()) {
      if (now - job.lastUsed > this.idleMs) {
        this.remove(job.jobId);
        dropped.push(job.jobId);
      }
    }
    for (const entry of this.unresolved.values()) {
      if (entry.expiresAt <= now) this.unresolved.delete(entry.ip);
    }
    return dropped;
  }

  /** One address (the service IP) per job used within the last `sinceMs`: worth re-querying now and then. */
  inUse(sinceMs: number, now = this.now()): number[] {
    const ips: number[] = [];
    for (const job of this.jobs.values()) {
      if (now - job.lastUsed <= sinceMs) ips.push(job.serviceIp);
    }
    return ips;
  }

  /** Every cached job, readable. */
  snapshot(): CachedJobView[] {
    return [...this.jobs.values()].map((job) => ({
      jobId: job.jobId,
      jobName: job.jobName,
      serviceIp: numberToIp(job.serviceIp),
      lastUsed: job.lastUsed,
      updatedAt: job.updatedAt,
      instances: job.instances.map(({ number, instanceIp, route }) => ({
        number,
        instanceIp: numberToIp(instanceIp),
        route: route && {
          nodeId: route.nodeId,
          local: route.local,
          namespaceIp: numberToIp(route.namespaceIp),
          publicIp: numberToIp(route.publicIp),
          udpPort: route.udpPort,
          publicKey: route.publicKey,
          candidates: route.candidates.map(([ip, port]) => `${numberToIp(ip)}:${port}`),
        },
      })),
    }));
  }

  private toCachedInstance(instance: RouteTableInstance): CachedInstance {
    const route = instance.route;
    return {
      number: instance.number,
      instanceIp: ipToNumber(instance.instanceIp),
      route: route
        ? {
            nodeId: route.nodeId,
            local: route.nodeId === this.localNodeId,
            namespaceIp: ipToNumber(route.namespaceIp),
            publicIp: ipToNumber(route.publicIp),
            udpPort: route.udpPort,
            publicKey: route.publicKey ?? null,
            candidates: (route.candidates ?? []).map(({ ip, port }) => [ipToNumber(ip), port] as const),
            endpointsKey: endpointsKey(route.publicIp, route.udpPort, route.candidates),
          }
        : null,
    };
  }

  private index(ip: number, address: ServiceAddress | InstanceAddress): void {
    this.addresses.set(ip, address);
    this.unresolved.delete(ip);
  }

  /** Removes the job's addresses, leaving any that another job's newer table has taken over. */
  private unindex(job: CachedJob): void {
    this.countPeers(job, -1);
    if (this.addresses.get(job.serviceIp)?.job === job) this.addresses.delete(job.serviceIp);
    for (const instance of job.instances) {
      if (this.addresses.get(instance.instanceIp)?.job === job) this.addresses.delete(instance.instanceIp);
    }
  }

  private countPeers(job: CachedJob, change: 1 | -1): void {
    for (const { route } of job.instances) {
      if (!route) continue;
      const key = route.publicIp * 65536 + route.udpPort;
      const count = (this.peers.get(key) ?? 0) + change;
      if (count > 0) this.peers.set(key, count);
      else this.peers.delete(key);
    }
  }

  private markUnresolved(entry: UnresolvedAddress): void {
    if (this.addresses.has(entry.ip)) return;
    this.unresolved.delete(entry.ip);
    if (this.unresolved.size >= this.maxUnresolved) {
      const oldest = this.unresolved.keys().next();
      if (!oldest.done) this.unresolved.delete(oldest.value);
    }
    this.unresolved.set(entry.ip, entry);
  }
}

/**
 * An address's answer as text, to compare: the job for a service IP (its flows keep their instance while that
 * one's route holds), the job and the route for an instance IP.
 */
function answerOf(address: ServiceAddress | InstanceAddress | undefined): string {
  if (!address) return '';
  if (address.kind === 'service') return `service ${address.job.jobId}`;
  const route = address.instance.route;
  if (!route) return `instance ${address.job.jobId} -`;
  return `instance ${address.job.jobId} ${route.nodeId} ${route.local} ${route.namespaceIp} ${route.publicIp}:${route.udpPort} ${route.publicKey}`;
}

function sortTargets(job: CachedJob): void {
  job.localTargets = job.instances.filter((instance) => instance.route?.local === true);
  job.remoteTargets = job.instances.filter((instance) => instance.route !== null && !instance.route.local);
}

/** `192.0.2.1:50103 10.0.0.5:50103 ...`: a worker's endpoint and candidates, to compare. */
export function endpointsKey(
  publicIp: string,
  udpPort: number,
  candidates: readonly { ip: string; port: number }[] = [],
): string {
  return [`${publicIp}:${udpPort}`, ...candidates.map(({ ip, port }) => `${ip}:${port}`)].join(' ');
}
