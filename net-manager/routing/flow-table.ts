import { monotonicMs } from '../../shared/monotonic-clock.js';
import { PROTOCOL_TCP } from './packet.js';

/**
 * Per-flow state for connections to service IPs. A flow is (protocol, local namespace IP, local port, service
 * IP, service port) and remembers the instance it was sent to, so a connection stays on one instance; the same
 * entry answers the reverse question for replies, (protocol, instance IP, port, local namespace IP, port) ->
 * service IP, so that the local socket sees replies from the address it connected to.
 *
 * Entries live in preallocated typed arrays with two open-addressing hash indexes (linear probing, deletion by
 * backward shift) and two LRU lists (TCP, and UDP/ICMP with their shorter idle time): no lookup, refresh,
 * insertion or eviction allocates. A small counting filter per local address makes the common case (a packet
 * of an address that has no service flow at all) one array read.
 */

export interface FlowTableOptions {
  /** Bound on flows; when full, the least recently used one goes (default 65,536). */
  maxFlows?: number;
  /** Idle time after which a TCP flow is forgotten (default 10 min). */
  tcpIdleMs?: number;
  /** Idle time after which a UDP or ICMP flow is forgotten (default 2 min). */
  otherIdleMs?: number;
  now?: () => number;
}

export interface FlowTableCounters {
  created: number;
  expired: number;
  /** Flows dropped to make room while the table was full. */
  evicted: number;
}

const NONE = -1;
const LIST_TCP = 0;
const LIST_OTHER = 1;
const LOCAL_FILTER_BITS = 12;

/** A flow that was added or forgotten: its key, and the instance it went to. */
export type FlowListener = (
  protocol: number,
  localIp: number,
  localPort: number,
  serviceIp: number,
  servicePort: number,
  instanceIp: number,
) => void;

export class FlowTable {
  readonly counters: FlowTableCounters = { created: 0, expired: 0, evicted: 0 };
  /** Told every flow added or forgotten (what the fast path cached for it, both ways, must go). */
  onFlowChanged: FlowListener | null = null;
  readonly now: () => number;
  private readonly capacity: number;
  private readonly idleMs: Float64Array;
  private count = 0;

  // One slot per flow; protocol 0 marks a free slot.
  private readonly protocol: Uint8Array;
  private readonly localIp: Uint32Array;
  private readonly localPort: Uint16Array;
  private readonly serviceIp: Uint32Array;
  private readonly servicePort: Uint16Array;
  private readonly instanceIp: Uint32Array;
  private readonly lastUsed: Float64Array;
  private readonly forwardHash: Uint32Array;
  private readonly reverseHash: Uint32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly heads = new Int32Array([NONE, NONE]);
  private readonly tails = new Int32Array([NONE, NONE]);
  private readonly free: Int32Array;
  private freeCount: number;

  // Hash indexes: slot -> flow + 1, 0 when empty.
  private readonly mask: number;
  private readonly forwardIndex: Int32Array;
  private readonly reverseIndex: Int32Array;
  /** Flows per local address, by a hash of the address; 0 means the address has certainly none. */
  private readonly localFlows = new Int32Array(1 << LOCAL_FILTER_BITS);

  constructor(options: FlowTableOptions = {}) {
    const capacity = Math.max(1, Math.floor(options.maxFlows ?? 65_536));
    this.capacity = capacity;
    this.idleMs = new Float64Array([options.tcpIdleMs ?? 10 * 60_000, options.otherIdleMs ?? 2 * 60_000]);
    this.now = options.now ?? monotonicMs;
    this.protocol = new Uint8Array(capacity);
    this.localIp = new Uint32Array(capacity);
    this.localPort = new Uint16Array(capacity);
    this.serviceIp = new Uint32Array(capacity);
    this.servicePort = new Uint16Array(capacity);
    this.instanceIp = new Uint32Array(capacity);
    this.lastUsed = new Float64Array(capacity);
    this.forwardHash = new Uint32Array(capacity);
    this.reverseHash = new Uint32Array(capacity);
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.free = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.free[i] = capacity - 1 - i;
    this.freeCount = capacity;
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.mask = slots - 1;
    this.forwardIndex = new Int32Array(slots);
    this.reverseIndex = new Int32Array(slots);
  }

  get size(): number {
    return this.count;
  }

  /** Whether `localIp` may have flows (a false answer is certain): the cheap test before a lookup. */
  mayHaveFlows(localIp: number): boolean {
    return this.localFlows[localFilterSlot(localIp)] !== 0;
  }

  /** The instance IP this flow was sent to, refreshing the flow; 0 when there is no live flow. */
  lookupForward(
    protocol: number,
    localIp: number,
    localPort: number,
    serviceIp: number,
    servicePort: number,
    now = this.now(),
  ): number {
    if (this.localFlows[localFilterSlot(localIp)] === 0) return 0;
    const slot = this.findForward(protocol, localIp, localPort, serviceIp, servicePort);
    if (slot === NONE) return 0;
    const flow = this.forwardIndex[slot]! - 1;
    return this.touch(flow, now) ? this.instanceIp[flow]! : 0;
  }

  /** The service IP a reply from (remoteIp, remotePort) to (localIp, localPort) answers for; 0 when none. */
  lookupReverse(
    protocol: number,
    remoteIp: number,
    remotePort: number,
    localIp: number,
    localPort: number,
    now = this.now(),
  ): number {
    if (this.localFlows[localFilterSlot(localIp)] === 0) return 0;
    const slot = this.findReverse(protocol, remoteIp, remotePort, localIp, localPort);
    if (slot === NONE) return 0;
    const flow = this.reverseIndex[slot]! - 1;
    return this.touch(flow, now) ? this.serviceIp[flow]! : 0;
  }

  /**
   * Records that the flow goes to `instanceIp`, replacing an earlier choice for it and any flow whose replies
   * would look the same. `protocol` must be non-zero (TCP, UDP, ICMP).
   */
  add(
    protocol: number,
    localIp: number,
    localPort: number,
    serviceIp: number,
    servicePort: number,
    instanceIp: number,
    now = this.now(),
  ): void {
    const forwardSlot = this.findForward(protocol, localIp, localPort, serviceIp, servicePort);
    if (forwardSlot !== NONE) this.release(this.forwardIndex[forwardSlot]! - 1);
    const reverseSlot = this.findReverse(protocol, instanceIp, servicePort, localIp, localPort);
    if (reverseSlot !== NONE) this.release(this.reverseIndex[reverseSlot]! - 1);
    if (this.freeCount === 0) {
      this.release(this.oldest());
      this.counters.evicted++;
    }
    const flow = this.free[--this.freeCount]!;
    this.protocol[flow] = protocol;
    this.localIp[flow] = localIp;
    this.localPort[flow] = localPort;
    this.serviceIp[flow] = serviceIp;
    this.servicePort[flow] = servicePort;
    this.instanceIp[flow] = instanceIp;
    this.lastUsed[flow] = now;
    const forwardHash = flowHash(protocol, localIp, localPort, serviceIp, servicePort);
    const reverseHash = flowHash(protocol, instanceIp, servicePort, localIp, localPort);
    this.forwardHash[flow] = forwardHash;
    this.reverseHash[flow] = reverseHash;
    insert(this.forwardIndex, this.mask, forwardHash, flow);
    insert(this.reverseIndex, this.mask, reverseHash, flow);
    this.append(flow);
    this.localFlows[localFilterSlot(localIp)]!++;
    this.count++;
    this.counters.created++;
    this.onFlowChanged?.(protocol, localIp, localPort, serviceIp, servicePort, instanceIp);
  }

  /** Forgets one flow; false when it was not there. */
  remove(
    protocol: number,
    localIp: number,
    localPort: number,
    serviceIp: number,
    servicePort: number,
  ): boolean {
    const slot = this.findForward(protocol, localIp, localPort, serviceIp, servicePort);
    if (slot === NONE) return false;
    this.release(this.forwardIndex[slot]! - 1);
    return true;
  }

  /** Forgets every flow of a local address (its container went; the address may be given out again). */
  removeLocal(localIp: number): number {
    if (this.localFlows[localFilterSlot(localIp)] === 0) return 0;
    let removed = 0;
    for (let flow = 0; flow < this.capacity; flow++) {
      if (this.protocol[flow] !== 0 && this.localIp[flow] === localIp) {
        this.release(flow);
        removed++;
      }
    }
    return removed;
  }

  /** Forgets the flows idle past their protocol's idle time; returns how many. */
  expire(now = this.now()): number {
    let expired = 0;
    for (let list = LIST_TCP; list <= LIST_OTHER; list++) {
      const idleMs = this.idleMs[list]!;
      for (let flow = this.heads[list]!; flow !== NONE && now - this.lastUsed[flow]! > idleMs; ) {
        const following = this.next[flow]!;
        this.release(flow);
        expired++;
        flow = following;
      }
    }
    this.counters.expired += expired;
    return expired;
  }

  private findForward(
    protocol: number,
    localIp: number,
    localPort: number,
    serviceIp: number,
    servicePort: number,
  ): number {
    const hash = flowHash(protocol, localIp, localPort, serviceIp, servicePort);
    const index = this.forwardIndex;
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const stored = index[slot]!;
      if (stored === 0) return NONE;
      const flow = stored - 1;
      if (
        this.forwardHash[flow] === hash &&
        this.localIp[flow] === localIp &&
        this.serviceIp[flow] === serviceIp &&
        this.localPort[flow] === localPort &&
        this.servicePort[flow] === servicePort &&
        this.protocol[flow] === protocol
      ) {
        return slot;
      }
    }
  }

  private findReverse(
    protocol: number,
    remoteIp: number,
    remotePort: number,
    localIp: number,
    localPort: number,
  ): number {
    const hash = flowHash(protocol, remoteIp, remotePort, localIp, localPort);
    const index = this.reverseIndex;
    for (let slot = hash & this.mask; ; slot = (slot + 1) & this.mask) {
      const stored = index[slot]!;
      if (stored === 0) return NONE;
      const flow = stored - 1;
      if (
        this.reverseHash[flow] === hash &&
        this.instanceIp[flow] === remoteIp &&
        this.localIp[flow] === localIp &&
        this.servicePort[flow] === remotePort &&
        this.localPort[flow] === localPort &&
        this.protocol[flow] === protocol
      ) {
        return slot;
      }
    }
  }

  /** Refreshes a live flow and returns true, or forgets an idle one and returns false. */
  private touch(flow: number, now: number): boolean {
    const list = listOf(this.protocol[flow]!);
    if (now - this.lastUsed[flow]! > this.idleMs[list]!) {
      this.release(flow);
      this.counters.expired++;
      return false;
    }
    this.lastUsed[flow] = now;
    if (this.tails[list] !== flow) {
      this.unlink(flow);
      this.append(flow);
    }
    return true;
  }

  private oldest(): number {
    const tcp = this.heads[LIST_TCP]!;
    const other = this.heads[LIST_OTHER]!;
    if (tcp === NONE) return other;
    if (other === NONE) return tcp;
    return this.lastUsed[tcp]! <= this.lastUsed[other]! ? tcp : other;
  }

  private release(flow: number): void {
    removeFromIndex(this.forwardIndex, this.mask, this.forwardHash, flow);
    removeFromIndex(this.reverseIndex, this.mask, this.reverseHash, flow);
    this.unlink(flow);
    this.localFlows[localFilterSlot(this.localIp[flow]!)]!--;
    const protocol = this.protocol[flow]!;
    this.protocol[flow] = 0;
    this.free[this.freeCount++] = flow;
    this.count--;
    this.onFlowChanged?.(
      protocol,
      this.localIp[flow]!,
      this.localPort[flow]!,
      this.serviceIp[flow]!,
      this.servicePort[flow]!,
      this.instanceIp[flow]!,
    );
  }

  private append(flow: number): void {
    const list = listOf(this.protocol[flow]!);
    const tail = this.tails[list]!;
    this.prev[flow] = tail;
    this.next[flow] = NONE;
    if (tail === NONE) this.heads[list] = flow;
    else this.next[tail] = flow;
    this.tails[list] = flow;
  }

  private unlink(flow: number): void {
    const list = listOf(this.protocol[flow]!);
    const before = this.prev[flow]!;
    const after = this.next[flow]!;
    if (before === NONE) this.heads[list] = after;
    else this.next[before] = after;
    if (after === NONE) this.tails[list] = before;
    else this.prev[after] = before;
  }
}

function listOf(protocol: number): number {
  return protocol === PROTOCOL_TCP ? LIST_TCP : LIST_OTHER;
}

function mix(hash: number, value: number): number {
  let h = Math.imul(hash ^ value, 0xcc9e2d51);
  h = (h << 15) | (h >>> 17);
  return Math.imul(h, 0x1b873593) ^ (h >>> 13);
}

function flowHash(protocol: number, ipA: number, portA: number, ipB: number, portB: number): number {
  let h = mix(protocol, ipA);
  h = mix(h, ipB);
  h = mix(h, (portA << 16) | portB);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

function localFilterSlot(localIp: number): number {
  return Math.imul(localIp, 0x9e3779b1) >>> (32 - LOCAL_FILTER_BITS);
}

function insert(index: Int32Array, mask: number, hash: number, flow: number): void {
  let slot = hash & mask;
  while (index[slot] !== 0) slot = (slot + 1) & mask;
  index[slot] = flow + 1;
}

/** Linear-probing deletion by backward shift: no tombstones, so probe chains never grow with churn. */
function removeFromIndex(index: Int32Array, mask: number, hashes: Uint32Array, flow: number): void {
  let hole = hashes[flow]! & mask;
  while (index[hole] !== flow + 1) hole = (hole + 1) & mask;
  for (let slot = (hole + 1) & mask; index[slot] !== 0; slot = (slot + 1) & mask) {
    const stored = index[slot]!;
    const home = hashes[stored - 1]! & mask;
    // The entry may fill the hole when its home lies cyclically at or before the hole.
    if (((slot - home) & mask) >= ((slot - hole) & mask)) {
      index[hole] = stored;
      hole = slot;
    }
  }
  index[hole] = 0;
}

export interface FragmentTableOptions {
  /** Slots of the direct-mapped table (rounded up to a power of two; default 1024). */
  slots?: number;
  /** How long a datagram's translation is kept for its later fragments (default 10 s). */
  ttlMs?: number;
}

/**
 * Only the first fragment of a datagram carries ports, so the flow decision made for it is remembered by
 * (source, destination, IP id, protocol) for the fragments that follow. Direct-mapped and fixed in size: a
 * collision replaces the older datagram, whose remaining fragments then miss (as if lost).
 */
export class FragmentTable {
  private readonly mask: number;
  private readonly ttlMs: number;
  private readonly src: Uint32Array;
  private readonly dst: Uint32Array;
  /** IP id << 8 | protocol. */
  private readonly key: Int32Array;
  /** The remembered address; 0 marks an empty slot. */
  private readonly value: Uint32Array;
  private readonly expiresAt: Float64Array;

  constructor(options: FragmentTableOptions = {}) {
    let slots = 16;
    while (slots < (options.slots ?? 1024)) slots *= 2;
    this.mask = slots - 1;
    this.ttlMs = options.ttlMs ?? 10_000;
    this.src = new Uint32Array(slots);
    this.dst = new Uint32Array(slots);
    this.key = new Int32Array(slots);
    this.value = new Uint32Array(slots);
    this.expiresAt = new Float64Array(slots);
  }

  /** Remembers `value` (a non-zero address) for the fragments of this datagram. */
  remember(src: number, dst: number, ipId: number, protocol: number, value: number, now: number): void {
    const slot = fragmentSlot(src, dst, ipId, protocol) & this.mask;
    this.src[slot] = src;
    this.dst[slot] = dst;
    this.key[slot] = (ipId << 8) | protocol;
    this.value[slot] = value;
    this.expiresAt[slot] = now + this.ttlMs;
  }

  /** The value remembered for this datagram, or 0. */
  lookup(src: number, dst: number, ipId: number, protocol: number, now: number): number {
    const slot = fragmentSlot(src, dst, ipId, protocol) & this.mask;
    if (
      this.value[slot] === 0 ||
      this.src[slot] !== src ||
      this.dst[slot] !== dst ||
      this.key[slot] !== ((ipId << 8) | protocol) ||
      this.expiresAt[slot]! <= now
    ) {
      return 0;
    }
    return this.value[slot]!;
  }
}

function fragmentSlot(src: number, dst: number, ipId: number, protocol: number): number {
  const h = mix(mix(protocol, src), dst ^ ipId);
  return (h ^ (h >>> 16)) >>> 0;
}
