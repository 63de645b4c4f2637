import type { Peers } from '../secure/peers.js';
import type { FastPathStats, NativeTun, TunDevice } from '../tun.js';
import type { UdpEndpoint } from '../tunnel.js';
import type { FlowDecision, Translator } from './translator.js';

/**
 * The fast path for established flows (native/fastpath.h): once the translator has decided a packet of an
 * ordinary flow, the forwarder installs that decision here, and the addon handles the flow's later packets in C
 * (read, rewrite, seal, send; or receive, open, rewrite, write) without calling into JavaScript.
 *
 * Invalidation is exact: every cached flow names the overlay addresses its decision read, and whatever changes
 * an answer forgets the flows that read it. The route cache reports addresses whose answer changed (a move, a
 * delete, a new endpoint or key), the translator namespace IPs attached anew or detached, the flow table
 * service flows added or forgotten (both directions), and the addon itself forgets flows through a peer that
 * goes. The next packet of such a flow takes the slow path again, which decides (and installs) anew.
 *
 * The slow path's timers expire what is not used (route tables, service flows, peers); the flows the fast path
 * carries are reported back to them every second (`refreshActivity`), so nothing in use expires under a flow.
 */

/** Flows cached at most (the least recently used one in a full bucket makes way). */
export const FAST_PATH_FLOWS = 8192;
const OUTGOING = 0 as const;
const ARRIVING = 1 as const;
/** Numbers per record of flowActivity, and records read per call. */
const RECORD = 8;
const RECORDS_PER_CALL = 1024;
const NO_SLOT = 0xffffffff;

export class FastPath {
  private readonly native: NativeTun;
  private readonly activity = new Uint32Array(RECORD * RECORDS_PER_CALL);

  constructor(
    private readonly tun: TunDevice,
    udp: UdpEndpoint,
    private readonly translator: Translator,
    capacity = FAST_PATH_FLOWS,
  ) {
    this.native = tun.linkFastPath(udp.native, capacity);
    const forgetAddress = (ip: number): void => void this.native.forgetAddress(ip);
    translator.routes.onAddressChanged = forgetAddress;
    translator.onAttachmentChanged = forgetAddress;
    translator.flows.onFlowChanged = (protocol, localIp, localPort, serviceIp, servicePort, instanceIp) => {
      this.native.forgetFlow(OUTGOING, protocol, localIp, localPort, serviceIp, servicePort);
      this.native.forgetFlow(ARRIVING, protocol, instanceIp, servicePort, localIp, localPort);
    };
  }

  /**
   * A packet read from the TUN went to a peer as `flow` says: its flow's later packets do the same in C, sealed
   * for the peer in `slot` (encrypted), or sent as they are to peerIp:peerPort (slot -1). The decision read the
   * local namespace IP, the destination and the instance chosen.
   */
  installOutgoing(flow: FlowDecision, slot: number, peerIp: number, peerPort: number): void {
    this.install(OUTGOING, flow, slot, peerIp, peerPort, flow.src, flow.dst, flow.target);
  }

  /**
   * A packet from a peer was delivered as `flow` says: its flow's later packets are too, in C, when they come
   * from the same peer (its `slot`, encrypted; else the endpoint peerIp:peerPort with slot -1). The decision read
   * the local namespace IP, the source (where it runs) and the service IP a reply is given.
   */
  installArriving(flow: FlowDecision, slot: number, peerIp: number, peerPort: number): void {
    this.install(ARRIVING, flow, slot, peerIp, peerPort, flow.dst, flow.src, flow.service);
  }

  /** `read0..2`: the overlay addresses the decision read (0: none); a change to any forgets the flow. */
  private install(
    direction: 0 | 1,
    flow: FlowDecision,
    slot: number,
    peerIp: number,
    peerPort: number,
    read0: number,
    read1: number,
    read2: number,
  ): void {
    const { protocol, src, srcPort, dst, dstPort, newSrc, newDst } = flow;
    this.native.installFlow(
      direction,
      protocol,
      src,
      srcPort,
      dst,
      dstPort,
      newSrc,
      newDst,
      slot,
      peerIp,
      peerPort,
      read0,
      read1,
      read2,
    );
  }

  /**
   * Tells the slow path's timers what the fast path carried since the last call: the route tables and service
   * flows those flows read are used now, and so are the peers sent to.
   */
  refreshActivity(now: number, peers: Peers | null): void {
    const { routes, flows } = this.translator;
    const records = this.activity;
    const peerClock = peers?.clock() ?? 0;
    for (;;) {
      const count = this.native.flowActivity(records);
      for (let i = 0; i < count; i++) {
        const at = i * RECORD;
        const protocol = records[at]! & 0xff;
        const direction = records[at]! >>> 8;
        const src = records[at + 1]!;
        const dst = records[at + 2]!;
        const srcPort = records[at + 3]! >>> 16;
        const dstPort = records[at + 3]! & 0xffff;
        if (direction === OUTGOING) {
          if (routes.lookup(dst, now)?.kind === 'service')
            flows.lookupForward(protocol, src, srcPort, dst, dstPort, now);
          const slot = records[at + 6]!;
          const peer = slot === NO_SLOT ? undefined : peers?.atSlot(slot);
          if (peer) peer.lastUsed = peerClock;
        } else {
          routes.lookup(src, now);
          if (records[at + 4] !== src) flows.lookupReverse(protocol, src, srcPort, dst, dstPort, now);
        }
      }
      if (count < RECORDS_PER_CALL) return;
    }
  }

  /** Forgets every cached flow. */
  forgetAll(): void {
    this.native.forgetAllFlows();
  }

  stats(): FastPathStats | null {
    return this.native.fastPathStats();
  }

  /** Unlinks it: every packet takes the slow path again. */
  close(): void {
    this.translator.routes.onAddressChanged = null;
    this.translator.onAttachmentChanged = null;
    this.translator.flows.onFlowChanged = null;
    this.tun.linkFastPath(null);
  }
}
