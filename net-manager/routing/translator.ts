import { FlowTable, FragmentTable } from './flow-table.js';
import {
  createPacketInfo,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  type PacketDropReason,
  type PacketInfo,
  PROTOCOL_ICMP,
  PROTOCOL_TCP,
  PROTOCOL_UDP,
  parsePacket,
  rewriteAddresses,
  rewriteInnerAddresses,
} from './packet.js';
import type { CachedJob, CachedRoute, RouteCache } from './route-cache.js';

/**
 * The per-packet decisions of the overlay, without I/O. Outgoing packets (read from the TUN) have their source
 * namespace IP replaced by the container's instance IP and their destination (instance IP or service IP) by the
 * target instance's namespace IP; arriving packets (from a peer, or looped back) get a service IP back as
 * their source when they answer a flow a local container opened to that service IP.
 */

export type TranslateAction = 'send' | 'local' | 'deliver' | 'query' | 'drop';

export type TranslateDropReason =
  | PacketDropReason
  | 'unsupported-protocol'
  | 'unknown-source'
  | 'unknown-destination'
  | 'awaiting-route'
  | 'no-route'
  | 'not-local'
  | 'fragment-no-flow';

/**
 * The answer for one packet; the same object is returned for every packet (read it before the next call).
 * - `send`: the packet is rewritten; send it as a UDP payload to `peerIp`:`peerPort` (encrypted: to the
 *   worker `route` names, through its session).
 * - `local`: rewritten and already translated as arriving; write it into the local TUN.
 * - `deliver`: (arriving) write it into the TUN.
 * - `query`: the destination `queryIp` is not known yet: ask the cluster manager (the packet is untouched;
 *   hold or drop it). Further packets to it answer `drop` with `awaiting-route` until the answer or a timeout.
 * - `drop`: `reason` says why; counted in `counters`.
 * `queryIp` may also be set with `send`, `local` and `deliver`: an arriving packet's source instance is not
 * known yet, and asking now saves the reply a round trip.
 */
export interface TranslateResult {
  action: TranslateAction;
  /** With `send` and `deliver`: the decision, for the fast path to repeat on the flow's later packets. */
  readonly flow: FlowDecision;
  peerIp: number;
  peerPort: number;
  /** With `send`: the route taken (its worker's node id and key). */
  route: CachedRoute | null;
  queryIp: number;
  reason: TranslateDropReason | null;
}

/**
 * What the translator did to a packet of an ordinary flow, so that the fast path (native/fastpath.h) can do the
 * same to the flow's later packets. `cacheable` is false for what must always come here: fragments, ICMP
 * errors and queries other than echo, packets with bytes past their total length, arriving packets whose source
 * is not known yet.
 */
export interface FlowDecision {
  cacheable: boolean;
  /** The flow as the packet showed it before the rewrite (ICMP echo: its identifier as both ports). */
  protocol: number;
  src: number;
  srcPort: number;
  dst: number;
  dstPort: number;
  /** Its addresses after the rewrite. */
  newSrc: number;
  newDst: number;
  /** Sent: the instance it went to. Delivered: 0. */
  target: number;
  /** Delivered: the service IP its source became (a reply in a flow to a service), else 0. */
  service: number;
}

export interface TranslatorCounters {
  sent: number;
  local: number;
  delivered: number;
  queries: number;
  notIpv4: number;
  truncated: number;
  badHeader: number;
  unsupportedProtocol: number;
  unknownSource: number;
  unknownDestination: number;
  awaitingRoute: number;
  noRoute: number;
  notLocal: number;
  fragmentNoFlow: number;
}

const DROP_COUNTERS = {
  'not-ipv4': 'notIpv4',
  truncated: 'truncated',
  'bad-header': 'badHeader',
  'unsupported-protocol': 'unsupportedProtocol',
  'unknown-source': 'unknownSource',
  'unknown-destination': 'unknownDestination',
  'awaiting-route': 'awaitingRoute',
  'no-route': 'noRoute',
  'not-local': 'notLocal',
  'fragment-no-flow': 'fragmentNoFlow',
} as const satisfies Record<TranslateDropReason, keyof TranslatorCounters>;

/** A local container joined or left: what was decided for its namespace IP must be forgotten. */
export type AddressListener = (ip: number) => void;

export interface TranslatorOptions {
  routes: RouteCache;
  flows?: FlowTable;
  now?: () => number;
}

export class Translator {
  readonly counters: TranslatorCounters = {
    sent: 0,
    local: 0,
    delivered: 0,
    queries: 0,
    notIpv4: 0,
    truncated: 0,
    badHeader: 0,
    unsupportedProtocol: 0,
    unknownSource: 0,
    unknownDestination: 0,
    awaitingRoute: 0,
    noRoute: 0,
    notLocal: 0,
    fragmentNoFlow: 0,
  };
  readonly routes: RouteCache;
  readonly flows: FlowTable;
  readonly now: () => number;
  /** Told each namespace IP attached anew or detached. */
  onAttachmentChanged: AddressListener | null = null;
  private readonly result: TranslateResult = {
    flow: {
      cacheable: false,
      protocol: 0,
      src: 0,
      srcPort: 0,
      dst: 0,
      dstPort: 0,
      newSrc: 0,
      newDst: 0,
      target: 0,
      service: 0,
    },
    action: 'drop',
    peerIp: 0,
    peerPort: 0,
    route: null,
    queryIp: 0,
    reason: null,
  };
  private readonly info: PacketInfo = createPacketInfo();
  /** Namespace IP -> instance IP of the containers attached on this worker. */
  private readonly attachments = new Map<number, number>();
  /** Service flows' choices for non-first fragments: outgoing by (nsIP, service IP), arriving by (instance, nsIP). */
  private readonly outgoingFragments = new FragmentTable();
  private readonly arrivingFragments = new FragmentTable();

  constructor(options: TranslatorOptions) {
    this.routes = options.routes;
    this.now = options.now ?? options.routes.now;
    this.flows = options.flows ?? new FlowTable({ now: this.now });
  }

  /** A container on this worker joined the overlay with these addresses. */
  attach(namespaceIp: number, instanceIp: number): void {
    if (this.attachments.get(namespaceIp) !== instanceIp) {
      this.flows.removeLocal(namespaceIp);
      this.onAttachmentChanged?.(namespaceIp);
    }
    this.attachments.set(namespaceIp, instanceIp);
  }

  /** The container left; its namespace IP and flows are forgotten. False when it was not attached. */
  detach(namespaceIp: number): boolean {
    this.flows.removeLocal(namespaceIp);
    this.onAttachmentChanged?.(namespaceIp);
    return this.attachments.delete(namespaceIp);
  }

  get attachmentCount(): number {
    return this.attachments.size;
  }

  /** Translates a packet a local container sent (read from the TUN), in place. Never throws. */
  translateOutgoing(buffer: Uint8Array, offset: number, length: number, now = this.now()): TranslateResult {
    const info = this.info;
    const result = this.begin();
    const refused = this.parse(buffer, offset, length);
    if (refused) return refused;
    const instanceIp = this.attachments.get(info.src);
    if (instanceIp === undefined) return this.drop('unknown-source');

    const dst = info.dst;
    const address = this.routes.lookup(dst, now);
    if (address === undefined) {
      this.routes.markPending(dst, now);
      this.counters.queries++;
      result.action = 'query';
      result.queryIp = dst;
      return result;
    }
    const flow = result.flow;
    this.remember(flow, length);
    let route: CachedRoute | null;
    switch (address.kind) {
      case 'missing':
        return this.drop('unknown-destination');
      case 'pending':
        return this.drop('awaiting-route');
      case 'instance':
        route = address.instance.route;
        flow.target = dst;
        break;
      case 'service': {
        const target = this.serviceTarget(address.job, info, now);
        if (target === undefined) return this.drop('fragment-no-flow');
        route = target;
        break;
      }
    }
    if (route === null) return this.drop('no-route');

    const originalSrc = info.src;
    rewriteAddresses(buffer, offset, info, instanceIp, route.namespaceIp);
    flow.newSrc = instanceIp;
    flow.newDst = route.namespaceIp;
    // An ICMP error a container sends quotes the packet it got: (sender's instance IP -> this namespace IP).
    if (info.hasInner && info.innerSrc === dst && info.innerDst === originalSrc) {
      rewriteInnerAddresses(buffer, offset, info, route.namespaceIp, instanceIp);
    }
    if (!route.local) {
      this.counters.sent++;
      result.action = 'send';
      result.peerIp = route.publicIp;
      result.peerPort = route.udpPort;
      result.route = route;
      return result;
    }
    if (!this.arrive(buffer, offset, info, now)) return this.drop('not-local');
    this.counters.local++;
    result.action = 'local';
    return result;
  }

  /** Translates a packet from a peer worker, in place, for the local TUN. Never throws. */
  translateArriving(buffer: Uint8Array, offset: number, length: number, now = this.now()): TranslateResult {
    const info = this.info;
    const result = this.begin();
    const refused = this.parse(buffer, offset, length);
    if (refused) return refused;
    const flow = result.flow;
    this.remember(flow, length);
    if (!this.arrive(buffer, offset, info, now)) return this.drop('not-local');
    flow.newSrc = info.src;
    flow.newDst = info.dst;
    flow.service = info.src === flow.src ? 0 : info.src;
    // The source's route is what tells who may send it: not known yet, nothing is cached.
    if (result.queryIp !== 0) flow.cacheable = false;
    this.counters.delivered++;
    result.action = 'deliver';
    return result;
  }

  /** Notes the parsed packet's flow before its rewrite, and whether the fast path may take its later packets. */
  private remember(flow: FlowDecision, length: number): void {
    const info = this.info;
    const protocol = info.protocol;
    flow.cacheable =
      !info.isFragment &&
      info.totalLength === length &&
      (protocol !== PROTOCOL_ICMP ||
        info.icmpType === ICMP_ECHO_REQUEST ||
        info.icmpType === ICMP_ECHO_REPLY);
    flow.protocol = protocol;
    flow.src = info.src;
    flow.srcPort = info.srcPort;
    flow.dst = info.dst;
    flow.dstPort = info.dstPort;
    flow.target = 0;
    flow.service = 0;
  }

  /** Parses the packet into `this.info`; a drop result when it is malformed or of another protocol. */
  private parse(buffer: Uint8Array, offset: number, length: number): TranslateResult | null {
    const invalid = parsePacket(buffer, offset, length, this.info);
    if (invalid !== null) return this.drop(invalid);
    const protocol = this.info.protocol;
    if (protocol !== PROTOCOL_TCP && protocol !== PROTOCOL_UDP && protocol !== PROTOCOL_ICMP) {
      return this.drop('unsupported-protocol');
    }
    return null;
  }

  private begin(): TranslateResult {
    const result = this.result;
    result.reason = null;
    result.queryIp = 0;
    result.peerIp = 0;
    result.peerPort = 0;
    result.route = null;
    return result;
  }

  private drop(reason: TranslateDropReason): TranslateResult {
    this.counters[DROP_COUNTERS[reason]]++;
    const result = this.result;
    result.action = 'drop';
    result.reason = reason;
    return result;
  }

  /**
   * The route of the instance this packet's flow to a service IP goes to, choosing one for a new flow: null when
   * none runs, undefined for a later fragment whose datagram was not seen.
   */
  private serviceTarget(job: CachedJob, info: PacketInfo, now: number): CachedRoute | null | undefined {
    const { protocol, src, dst, srcPort, dstPort } = info;
    if (!info.firstFragment) {
      const chosen = this.outgoingFragments.lookup(src, dst, info.ipId, protocol, now);
      return chosen === 0 ? undefined : this.routeOf(chosen, now);
    }
    const chosen = this.flows.lookupForward(protocol, src, srcPort, dst, dstPort, now);
    let route = chosen === 0 ? null : this.routeOf(chosen, now);
    this.result.flow.target = chosen;
    if (route === null) {
      // A new flow, or its instance stopped running: choose again.
      const instance = this.routes.chooseInstance(job);
      if (instance === null) return null;
      this.result.flow.target = instance.instanceIp;
      this.flows.add(protocol, src, srcPort, dst, dstPort, instance.instanceIp, now);
      route = instance.route;
      if (route === null) return null;
      if (info.moreFragments) {
        this.outgoingFragments.remember(src, dst, info.ipId, protocol, instance.instanceIp, now);
      }
    } else if (info.moreFragments) {
      this.outgoingFragments.remember(src, dst, info.ipId, protocol, chosen, now);
    }
    return route;
  }

  private routeOf(instanceIp: number, now: number): CachedRoute | null {
    const address = this.routes.lookup(instanceIp, now);
    return address?.kind === 'instance' ? address.instance.route : null;
  }

  /**
   * The arriving half, on a parsed packet whose destination should be a local namespace IP: gives a service
   * flow's replies the service IP as source. False when the destination is not attached here.
   */
  private arrive(buffer: Uint8Array, offset: number, info: PacketInfo, now: number): boolean {
    const localIp = info.dst;
    if (!this.attachments.has(localIp)) return false;
    const src = info.src;
    if (this.routes.lookup(src, now) === undefined) {
      this.routes.markPending(src, now);
      this.counters.queries++;
      this.result.queryIp = src;
    }
    if (!this.flows.mayHaveFlows(localIp)) return true;
    let serviceIp: number;
    if (info.hasInner) {
      // An ICMP error about a packet the local container sent: (local nsIP -> remote instance) is quoted.
      if (info.innerSrc !== localIp || info.innerDst !== src) return true;
      serviceIp = this.flows.lookupReverse(
        info.innerProtocol,
        src,
        info.innerDstPort,
        localIp,
        info.innerSrcPort,
        now,
      );
      if (serviceIp === 0) return true;
      rewriteInnerAddresses(buffer, offset, info, localIp, serviceIp);
    } else if (!info.firstFragment) {
      serviceIp = this.arrivingFragments.lookup(src, localIp, info.ipId, info.protocol, now);
      if (serviceIp === 0) return true;
    } else {
      serviceIp = this.flows.lookupReverse(info.protocol, src, info.srcPort, localIp, info.dstPort, now);
      if (serviceIp === 0) return true;
      if (info.moreFragments) {
        this.arrivingFragments.remember(src, localIp, info.ipId, info.protocol, serviceIp, now);
      }
    }
    rewriteAddresses(buffer, offset, info, serviceIp, localIp);
    return true;
  }
}
