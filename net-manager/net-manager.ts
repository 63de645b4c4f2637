import { randomUUID } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { mkdir, readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import {
  type AttachRequest,
  type AttachResponse,
  type DetachRequest,
  ipToNumber,
  type Logger,
  type NetManagerStatus,
  type NetTable,
  type NodeHandover,
  NodeHandoverSchema,
  numberToIp,
  type OverlayEndpoint,
  parseCidr,
  parseJson,
  rangeWithin,
  writeFileAtomic,
} from '../shared/index.js';
import { startLocalApi } from './api.js';
import type { NetManagerConfig } from './config.js';
import { ReflexiveAddress } from './control/reflexive-address.js';
import { RouteTableClient } from './control/route-table-client.js';
import { NetManagerError } from './errors.js';
import { AddressBook, instanceKey, SubnetFullError } from './plumbing/address-book.js';
import { AttachError, ContainerLink } from './plumbing/container-link.js';
import { CommandRunner } from './plumbing/ip-command.js';
import { localAddresses } from './plumbing/local-addresses.js';
import { OverlayLinks } from './plumbing/overlay-links.js';
import { findPublicAddress } from './plumbing/public-address.js';
import { overlayMtu } from './plumbing/underlay-mtu.js';
import { FastPath } from './routing/fast-path.js';
import { Forwarder, QUERY_TIMEOUT_MS } from './routing/forwarder.js';
import { endpointsKey, RouteCache } from './routing/route-cache.js';
import { Translator } from './routing/translator.js';
import { hasAesInstructions } from './secure/aes-hardware.js';
import { loadOverlayKeys } from './secure/keys.js';
import type { StaticKeys } from './secure/noise.js';
import { Peers } from './secure/peers.js';
import { TunDevice } from './tun.js';
import { UdpEndpoint } from './tunnel.js';

const NODE_FILE = 'node.json';
/** Route tables in use are asked for again this often: pushes lost to a broker outage heal by then. */
const REFRESH_MS = 5 * 60_000;
/** Attachments from before a restart that the node engine has not renewed by then give their address back. */
const STALE_ATTACHMENT_MS = 2 * 60_000;
/**
 * How often the addresses are read again and the rendezvous port asked (a NAT's mapping kept, a DHCP change or a
 * new mapping noticed): under the 30 s that many NATs keep an idle UDP mapping.
 */
const ENDPOINTS_EVERY_MS = 25_000;

/** What the net manager runs on once the node engine told it who the node is. */
interface Joined {
  handover: NodeHandover;
  subnet: string;
  gateway: string;
  prefixLength: number;
  publicIp: string;
  book: AddressBook;
  control: RouteTableClient;
  mtu: number;
  /** The cluster manager's rendezvous port, resolved; absent from older cluster managers. */
  rendezvous: { ip: number; port: number } | undefined;
  /** Local addresses announced as candidates, last time they were read. */
  localAddresses: string[];
}

/**
 * Wires the net manager together: the TUN device and UDP endpoint of the data plane, the route tables from
 * the cluster manager, the worker's links (bridge, veths into containers) and the local API the node engine
 * calls. Everything it creates is removed on stop, and whatever a crash left behind is removed on start.
 */
export class NetManager {
  private readonly bootId = randomUUID();
  private readonly runner = new CommandRunner();
  private readonly links: OverlayLinks;
  private readonly containers: ContainerLink;
  private readonly routeCache = new RouteCache({ pendingTtlMs: QUERY_TIMEOUT_MS });
  private readonly translator = new Translator({ routes: this.routeCache });
  private readonly counters = { rejectedTables: 0, queriesPublished: 0 };
  private tun: TunDevice | undefined;
  private udp: UdpEndpoint | undefined;
  private forwarder: Forwarder | undefined;
  private fastPath: FastPath | undefined;
  /** The last rendezvous probe, and how long to wait for its answer before the next (see probeAgainIfUnanswered). */
  private probedAt: number | undefined;
  private probeDelayMs = 1000;
  /** This worker's overlay key pair (made at the first start). */
  private keys: StaticKeys | undefined;
  /** Set while the overlay is encrypted. */
  private peers: Peers | undefined;
  private readonly reflexive = new ReflexiveAddress();
  private api: Server | undefined;
  private joined: Joined | undefined;
  private joining: Promise<void> = Promise.resolve();
  private timers: NodeJS.Timeout[] = [];
  /** Keys of instances attached before this start: released unless the node engine attaches them again. */
  private readonly staleKeys = new Set<string>();

  /** `onFatal`: the data plane stopped for good (a TUN or socket poll failed); the program should end. */
  constructor(
    private readonly config: NetManagerConfig,
    private readonly logger: Logger,
    private readonly onFatal: (error: Error) => void = () => undefined,
  ) {
    const common = {
      runner: this.runner,
      bridge: config.bridgeName,
      overlayRoute: config.overlayRoute,
      mtu: config.mtu ?? 1420,
    };
    this.links = new OverlayLinks({ ...common, tun: config.tunName, logger });
    this.containers = new ContainerLink(common);
  }

  async start(): Promise<void> {
    const { config, logger } = this;
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    this.keys = await loadOverlayKeys(config.dataDir);
    await this.links.cleanUpLeftovers();
    this.tun = this.openTun();
    this.udp = UdpEndpoint.bind('0.0.0.0', config.udpPort, { offload: this.tun.offload });
    this.forwarder = new Forwarder({
      tun: this.tun,
      udp: this.udp,
      translator: this.translator,
      query: (ip) => this.query(ip),
      onRendezvousAnswer: (buffer, offset, length) => {
        if (this.reflexive.answer(buffer, offset, length)) {
          this.logger.info({ reflexive: this.reflexive.address }, 'address and port as seen from outside');
          this.joined?.control.announce();
        }
      },
      onError: (error) => {
        logger.fatal({ err: error.message }, 'the data plane stopped');
        this.onFatal(error);
      },
    });
    if (config.fastPath) {
      this.fastPath = new FastPath(this.tun, this.udp, this.translator);
      this.forwarder.setFastPath(this.fastPath);
    }
    this.forwarder.start();
    const saved = await this.loadHandover();
    if (saved) {
      await this.join(saved).catch((error: Error) =>
        logger.error(
          { err: error.message },
          'cannot rejoin with the saved node; waiting for the node engine',
        ),
      );
    }
    this.api = await startLocalApi(config.socketPath, this, logger);
    this.timers.push(
      setInterval(() => this.expire(), 1000),
      setInterval(() => this.refresh(), REFRESH_MS),
      setInterval(() => void this.refreshEndpoints(), ENDPOINTS_EVERY_MS),
    );
  }

  /** The TUN device, with offloads where asked for and the kernel has them (else without, and a warning). */
  private openTun(): TunDevice {
    const { config, logger } = this;
    if (!config.offload) return TunDevice.open(config.tunName);
    try {
      return TunDevice.open(config.tunName, { offload: true });
    } catch (error) {
      logger.warn(
        { err: (error as Error).message },
        'TUN offloads unavailable; every packet moves on its own (slower)',
      );
      return TunDevice.open(config.tunName);
    }
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    await new Promise<void>((resolve) => (this.api ? this.api.close(() => resolve()) : resolve()));
    await this.joining;
    await this.joined?.control.close();
    this.peers?.clear();
    this.fastPath?.close();
    this.tun?.close();
    this.udp?.close();
    // Every container's veth, the bridge, the route and the chain.
    await this.links.tearDown();
  }

  // --- local API ------------------------------------------------------------------------------------------

  status(): NetManagerStatus {
    const joined = this.joined;
    return {
      bootId: this.bootId,
      nodeId: joined?.handover.nodeId ?? null,
      subnet: joined?.subnet ?? null,
      publicIp: joined?.publicIp ?? null,
      udpPort: this.config.udpPort,
      tun: this.tun?.name ?? this.config.tunName,
      offload: this.tun?.offload ?? false,
      fastPath: this.fastPath !== undefined,
      mqttConnected: joined?.control.connected ?? false,
      encryption: this.peers !== undefined,
      ...(joined ? { mtu: joined.mtu } : {}),
      ...(this.peers ? { peers: this.peers.views() } : {}),
      ...(joined ? { candidates: this.candidates() } : {}),
      attachments: this.translator.attachmentCount,
      // One flat map: the addon's counters carry their device in the name (both have `truncated`-like names).
      counters: {
        ...this.translator.counters,
        ...this.forwarder?.counters,
        ...this.peers?.counters,
        ...prefixed('tun', this.tun?.stats()),
        ...prefixed('udp', this.udp?.stats()),
        ...prefixed('fastPath', this.fastPath?.stats() ?? undefined),
        ...this.counters,
        cachedJobs: this.routeCache.size,
        flows: this.translator.flows.size,
      },
    };
  }

  /** The node engine registered: join the overlay as that node (again, if nothing changed). */
  async handOver(handover: NodeHandover): Promise<void> {
    if (!handover.subnet) {
      throw new NetManagerError('not_ready', 'the cluster manager gave this node no overlay subnet', 409);
    }
    const next = this.joining.then(() => this.join(handover));
    this.joining = next.catch(() => undefined);
    await next;
    await writeFileAtomic(join(this.config.dataDir, NODE_FILE), JSON.stringify(handover));
  }

  async attach(request: AttachRequest): Promise<AttachResponse> {
    await this.joining;
    const joined = this.joined;
    if (!joined) throw new NetManagerError('not_ready', 'no node handed over yet: no overlay subnet', 409);
    const key = instanceKey(request.jobId, request.instance);
    let namespaceIp: string;
    try {
      namespaceIp = await joined.book.allocate(key);
    } catch (error) {
      if (error instanceof SubnetFullError) throw new NetManagerError('subnet_full', error.message, 409);
      throw error;
    }
    // Another container of the same instance (an older generation) gives up the address to the new one.
    for (const other of joined.book.attachments()) {
      if (other.key === key && other.containerId !== request.containerId)
        await this.unlink(joined, other.containerId);
    }
    let veth: string;
    let link: string;
    try {
      const attached = await this.containers.attach({
        containerId: request.containerId,
        pid: request.pid,
        namespaceIp,
        gateway: joined.gateway,
        prefixLength: joined.prefixLength,
      });
      veth = attached.veth;
      link = attached.interface;
    } catch (error) {
      if (error instanceof AttachError) throw new NetManagerError('attach_failed', error.message, 409);
      throw error;
    }
    await joined.book.recordAttachment({
      containerId: request.containerId,
      pid: request.pid,
      key,
      namespaceIp,
      instanceIp: request.instanceIp,
      veth,
    });
    this.staleKeys.delete(key);
    this.translator.attach(ipToNumber(namespaceIp), ipToNumber(request.instanceIp));
    this.logger.info(
      { job: request.jobName, instance: request.instance, namespaceIp, instanceIp: request.instanceIp, veth },
      'container attached',
    );
    return { namespaceIp, interface: link };
  }

  async detach(request: DetachRequest): Promise<void> {
    await this.joining;
    const joined = this.joined;
    if (!joined) return;
    const attachment = joined.book.attachment(request.containerId);
    await this.unlink(joined, request.containerId);
    if (attachment) {
      await joined.book.release(attachment.key);
      this.logger.info({ namespaceIp: attachment.namespaceIp, key: attachment.key }, 'container detached');
    }
  }

  attachments(): unknown {
    return this.joined?.book.attachments() ?? [];
  }

  routes(): unknown {
    return { waiting: this.forwarder?.waitingCount ?? 0, jobs: this.routeCache.snapshot() };
  }

  // --- joining, route tables --------------------------------------------------------------------------------

  private async join(handover: NodeHandover): Promise<void> {
    const subnet = handover.subnet!;
    const range = parseCidr(subnet);
    if (!rangeWithin(range, parseCidr(this.config.overlayRoute))) {
      throw new NetManagerError(
        'invalid_input',
        `subnet ${subnet} lies outside the overlay route ${this.config.overlayRoute}`,
        400,
      );
    }
    const previous = this.joined;
    const sameNode =
      previous &&
      previous.handover.nodeId === handover.nodeId &&
      previous.handover.mqtt.url === handover.mqtt.url &&
      previous.handover.mqtt.username === handover.mqtt.username &&
      previous.handover.mqtt.password === handover.mqtt.password &&
      previous.handover.mqtt.ca === handover.mqtt.ca;
    const encryption = handover.encryption === true;
    if (
      sameNode &&
      previous.subnet === subnet &&
      previous.handover.encryption === handover.encryption &&
      JSON.stringify(previous.handover.rendezvous) === JSON.stringify(handover.rendezvous)
    )
      return;
    const publicIp = this.config.publicIp ?? (await this.publicAddress(handover.mqtt.url));
    const mtu = this.config.mtu ?? (await overlayMtu(this.runner, brokerHost(handover.mqtt.url), encryption));
    this.links.mtu = mtu;
    this.containers.mtu = mtu;
    const links = await this.links.setUp(subnet);
    const rendezvous = handover.rendezvous
      ? await resolveEndpoint(handover.rendezvous).catch((error: Error) => {
          this.logger.warn(
            { err: error.message },
            'cannot resolve the rendezvous port: no reflexive address',
          );
          return undefined;
        })
      : undefined;
    const addresses = await this.localAddresses();
    let book = previous?.book;
    if (!book || previous?.subnet !== subnet) {
      book = await AddressBook.load(this.config.dataDir, subnet, this.logger);
      // Links from before this start are gone (removed on start); their addresses wait for the node engine,
      // which attaches what still runs; the rest are released a while after the join.
      for (const attachment of await book.forgetAllAttachments()) this.staleKeys.add(attachment.key);
      if (this.staleKeys.size > 0)
        this.timers.push(setTimeout(() => void this.releaseStale(), STALE_ATTACHMENT_MS));
    }
    let control = previous?.control;
    if (!sameNode || !control) {
      await control?.close();
      control = this.connectControlPlane(handover, publicIp, subnet);
    }
    this.routeCache.setLocalNodeId(handover.nodeId);
    this.joined = {
      handover,
      subnet,
      gateway: links.gateway,
      prefixLength: links.prefixLength,
      publicIp,
      book,
      control,
      mtu,
      rendezvous,
      localAddresses: addresses,
    };
    this.setEncryption(encryption);
    this.peers?.setRelay(rendezvous ?? null);
    this.probeRendezvous();
    if (sameNode) control.announce();
    this.logger.info(
      { nodeId: handover.nodeId, subnet, publicIp, gateway: links.gateway, mtu, encryption },
      'joined the overlay',
    );
    if (!encryption)
      this.logger.warn(
        'overlay encryption is off for this cluster (--overlay-plaintext on the cluster manager): overlay packets cross the network in clear and are taken from any address that reaches the UDP port',
      );
  }

  /**
   * Where peers may reach this worker besides `publicIp`: the address and port the rendezvous port saw (behind a
   * NAT, its mapping), then the local addresses (workers on the same network).
   */
  private candidates(): OverlayEndpoint[] {
    const joined = this.joined;
    if (!joined) return [];
    const port = this.config.udpPort;
    const seen = new Set([`${joined.publicIp}:${port}`]);
    const candidates: OverlayEndpoint[] = [];
    const reflexive = this.reflexive.address;
    for (const candidate of [
      ...(reflexive ? [reflexive] : []),
      ...joined.localAddresses.map((ip) => ({ ip, port })),
    ]) {
      const key = `${candidate.ip}:${candidate.port}`;
      if (seen.has(key) || candidates.length >= 8) continue;
      seen.add(key);
      candidates.push(candidate);
    }
    return candidates;
  }

  /** Asks the rendezvous port what this worker looks like from outside (encrypted overlays only). */
  private probeRendezvous(): void {
    const rendezvous = this.joined?.rendezvous;
    if (!rendezvous || !this.peers || !this.udp) return;
    this.udp.sendTo(this.reflexive.probe(), rendezvous.ip, rendezvous.port);
    this.probedAt = performance.now();
  }

  /**
   * Until the first answer, a lost probe (a datagram) is sent again after 1 s, 2 s, 4 s ... (then the 25 s
   * refresh takes over), so that a worker behind a NAT need not wait 25 s to be reachable.
   */
  private probeAgainIfUnanswered(): void {
    if (this.reflexive.address || this.probedAt === undefined) return;
    if (performance.now() - this.probedAt < this.probeDelayMs) return;
    this.probeDelayMs = Math.min(this.probeDelayMs * 2, ENDPOINTS_EVERY_MS);
    this.probeRendezvous();
  }

  /** Reads the addresses again and asks the rendezvous port: whatever changed is announced. */
  private async refreshEndpoints(): Promise<void> {
    const joined = this.joined;
    if (!joined) return;
    this.probeRendezvous();
    const before = JSON.stringify([joined.publicIp, joined.localAddresses]);
    joined.localAddresses = await this.localAddresses();
    if (!this.config.publicIp)
      joined.publicIp = await this.publicAddress(joined.handover.mqtt.url).catch(() => joined.publicIp);
    if (JSON.stringify([joined.publicIp, joined.localAddresses]) !== before) {
      this.logger.info(
        { publicIp: joined.publicIp, localAddresses: joined.localAddresses },
        'the addresses changed: announcing them again',
      );
      joined.control.announce();
    }
  }

  private localAddresses(): Promise<string[]> {
    return localAddresses(this.runner, [this.config.tunName, this.config.bridgeName]);
  }

  /** Encrypted: the addon seals and opens, the peers handshake. Unencrypted: every key is dropped. */
  private setEncryption(on: boolean): void {
    const udp = this.udp!;
    if (on && !this.peers) {
      udp.secure(true);
      this.peers = new Peers({
        udp,
        keys: this.keys!,
        askKey: (key) => this.joined?.control.queryKey(key),
        askPunch: (key) => this.joined?.control.queryKey(key, true),
        offerAes: this.config.cipher === 'auto' && hasAesInstructions(),
        logger: this.logger.child({ part: 'peers' }),
        ...(this.config.rekeyAfterMs ? { rekeyAfterMs: this.config.rekeyAfterMs } : {}),
      });
      this.forwarder?.setPeers(this.peers);
    } else if (!on && this.peers) {
      this.forwarder?.setPeers(null);
      this.peers.clear();
      this.peers = undefined;
      udp.secure(false);
    }
  }

  private connectControlPlane(handover: NodeHandover, publicIp: string, subnet: string): RouteTableClient {
    return new RouteTableClient({
      nodeId: handover.nodeId,
      mqtt: handover.mqtt,
      announcement: () => ({
        publicIp: this.joined?.publicIp ?? publicIp,
        udpPort: this.config.udpPort,
        subnet: this.joined?.subnet ?? subnet,
        publicKey: this.keys!.publicKey.toString('base64'),
        candidates: this.candidates(),
        ...(this.reflexive.address ? { reflexive: this.reflexive.address } : {}),
        ts: Date.now(),
      }),
      onTable: (table) => this.applyTable(table),
      onConnect: () => this.refresh(),
      onRejected: () => this.counters.rejectedTables++,
      logger: this.logger.child({ part: 'control-plane' }),
    });
  }

  private applyTable(table: NetTable): void {
    switch (table.kind) {
      case 'job':
        this.routeCache.apply(table);
        break;
      case 'missing':
        this.routeCache.markMissing(ipToNumber(table.query));
        break;
      case 'removed':
        this.routeCache.remove(table.jobId);
        break;
      case 'peer': {
        const node = table.node;
        if (!node) {
          this.peers?.unknownKey(table.publicKey);
          return;
        }
        const peer = this.peers?.forRoute({
          nodeId: node.nodeId,
          publicKey: table.publicKey,
          publicIp: ipToNumber(node.publicIp),
          udpPort: node.udpPort,
          candidates: (node.candidates ?? []).map(({ ip, port }) => [ipToNumber(ip), port] as const),
          endpointsKey: endpointsKey(node.publicIp, node.udpPort, node.candidates),
        });
        if (peer && table.punch) this.peers?.reachOut(peer);
        return;
      }
    }
    this.forwarder?.retryWaiting();
  }

  private query(ip: number): void {
    this.counters.queriesPublished++;
    this.joined?.control.query(numberToIp(ip));
  }

  /** Asks again for every table in use (after a reconnect, and now and then). */
  private refresh(): void {
    for (const ip of this.routeCache.inUse(REFRESH_MS)) this.query(ip);
  }

  private expire(): void {
    this.probeAgainIfUnanswered();
    // First what the fast path carried: its flows keep what they read in use.
    this.fastPath?.refreshActivity(this.routeCache.now(), this.peers ?? null);
    this.routeCache.expire();
    this.translator.flows.expire();
    this.forwarder?.expireWaiting();
    this.peers?.tick();
  }

  private async releaseStale(): Promise<void> {
    const book = this.joined?.book;
    if (!book) return;
    const keys = [...this.staleKeys];
    this.staleKeys.clear();
    if (keys.length === 0) return;
    await book
      .release(...keys)
      .then(() => this.logger.info({ released: keys.length }, 'released stale addresses'))
      .catch((error: Error) => this.logger.error({ err: error.message }, 'cannot release stale addresses'));
  }

  private async unlink(joined: Joined, containerId: string): Promise<void> {
    const attachment = await joined.book.forgetAttachment(containerId);
    await this.containers.detach(containerId);
    if (attachment) this.translator.detach(ipToNumber(attachment.namespaceIp));
  }

  private async publicAddress(mqttUrl: string): Promise<string> {
    const host = brokerHost(mqttUrl);
    let found: Awaited<ReturnType<typeof findPublicAddress>>;
    try {
      found = await findPublicAddress(this.runner, host);
    } catch (error) {
      throw new NetManagerError('not_ready', (error as Error).message, 409);
    }
    if (found.source === 'default-route')
      this.logger.info(
        { publicIp: found.ip, broker: host },
        "the broker is on this machine: announcing the default route's address to peers (--public-ip to choose another)",
      );
    return found.ip;
  }

  private async loadHandover(): Promise<NodeHandover | undefined> {
    let text: string;
    try {
      text = await readFile(join(this.config.dataDir, NODE_FILE), 'utf8');
    } catch {
      return undefined;
    }
    const parsed = NodeHandoverSchema.safeParse(parseJson(text));
    if (!parsed.success) {
      this.logger.warn('the saved node file is unreadable: waiting for the node engine to hand over again');
      return undefined;
    }
    return parsed.data;
  }
}

/** A host and port as an address number and port (the host may be a name). */
async function resolveEndpoint(endpoint: {
  host: string;
  port: number;
}): Promise<{ ip: number; port: number }> {
  const { address } = await lookup(endpoint.host, { family: 4 });
  return { ip: ipToNumber(address), port: endpoint.port };
}

/** The broker's host name or address from its URL. */
function brokerHost(mqttUrl: string): string {
  try {
    return new URL(mqttUrl).hostname.replace(/^\[|\]$/g, '');
  } catch {
    throw new NetManagerError('invalid_input', `"${mqttUrl}" is not a URL`, 400);
  }
}

/** `{oversized: 1}` -> `{tunOversized: 1}`. */
function prefixed(prefix: string, counters: object | undefined): Record<string, number> {
  return Object.fromEntries(
    Object.entries(counters ?? {}).map(([name, value]) => [
      prefix + name[0]!.toUpperCase() + name.slice(1),
      value,
    ]),
  );
}
