import { writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { join } from 'node:path';
import type { ScheduledTask } from 'node-cron';
import { Server as SocketServer } from 'socket.io';
import {
  connectMqtt,
  describeConnectError,
  formatJoinToken,
  type Logger,
  type MqttClient,
  type MqttLogin,
  parseJoinToken,
  topics,
} from '../shared/index.js';
import { AccessTokens, DEFAULT_TOKENS } from './access/access-tokens.js';
import { createApi } from './api/app.js';
import { DynamicSecurity } from './broker/dynsec.js';
import { EmbeddedBroker } from './broker/embedded-broker.js';
import type { ClusterManagerConfig } from './config.js';
import { dashboardDir } from './dashboard/index.js';
import { CommandOutbox } from './dispatch/command-outbox.js';
import { subscribeToNodes } from './dispatch/node-messages.js';
import { notFound } from './errors.js';
import { scheduleGarbageCollection } from './garbage-collection.js';
import { Drains } from './jobs/drains.js';
import { Evaluations } from './jobs/evaluations.js';
import { Failover } from './jobs/failover.js';
import { JobService } from './jobs/job-service.js';
import { NodeOperations } from './jobs/node-operations.js';
import { type NodeRemoval, removeNode } from './jobs/node-removal.js';
import { NodeReports } from './jobs/node-reports.js';
import { Placement } from './jobs/placement.js';
import { Rollouts } from './jobs/rollouts.js';
import { ControlLag } from './liveness/control-lag.js';
import { NodeLiveness } from './liveness/node-liveness.js';
import { LogRelay } from './logs/log-relay.js';
import { createMetrics } from './metrics.js';
import { NetTables } from './network/net-tables.js';
import { OverlayAddresses } from './network/overlay-addresses.js';
import { RelayDirectory } from './network/relay-directory.js';
import { RendezvousPort } from './network/rendezvous.js';
import { DEFAULT_STREAM_LIMITS, StreamHub } from './push/stream-hub.js';
import { NodeRegistry } from './registry/node-registry.js';
import { hashSecret, loadOrCreateToken, newSecret, sameSecret } from './secrets.js';
import { SqliteStore, type Store } from './store/index.js';
import { TelemetryHistory } from './telemetry/telemetry-history.js';
import { type ClusterTls, loadClusterTls } from './tls/cluster-tls.js';
import { answerPlainHttp, TlsPort } from './tls/tls-port.js';

/** How often the server certificate is checked (names, expiry) while the cluster manager runs. */
const TLS_RENEWAL_CHECK_MS = 24 * 60 * 60 * 1000;

/** Where the cluster manager writes the join token to hand to nodes (with the CA pin), for start-up.sh. */
export const NODE_JOIN_TOKEN_FILE = 'node-join-token';

/** Wires the cluster manager's parts together: store, broker, registry, dispatch, liveness, API. */
export class ClusterManager {
  readonly store: Store;
  /** What nodes join with: `E10<CA fingerprint>::<secret>`, or the bare secret with `--insecure`. */
  readonly joinToken: string;
  /** The TLS material of every port; undefined with `--insecure`. */
  tls?: ClusterTls;
  private secureServer?: ReturnType<typeof createHttpsServer>;
  private tlsRenewal?: NodeJS.Timeout;
  private readonly joinSecret: string;
  /** The default admin token (`--api-token`, else `<data-dir>/api-token`). */
  readonly apiToken: string;
  /** The default read-only token (`<data-dir>/telemetry-token`): the MQTT `operator` login's password. */
  readonly telemetryToken: string;
  readonly tokens: AccessTokens;
  readonly jobs: JobService;
  private broker?: EmbeddedBroker;
  /** The UDP port where net managers learn their address as seen from outside (NAT traversal). */
  private rendezvous: RendezvousPort | undefined;
  /** Who the rendezvous port relays between (nodes' keys and NAT mappings, from their announces). */
  private readonly relays = new RelayDirectory();
  private mqtt?: MqttClient;
  private http?: HttpServer;
  /** What listens on the HTTP port: the HTTP(S) server itself, or the TLS port in front of it. */
  private httpListener?: { server: NetServer; close: () => Promise<void> };
  private io?: SocketServer;
  private readonly outbox: CommandOutbox;
  private readonly liveness: NodeLiveness;
  private readonly reports: NodeReports;
  private readonly placement: Placement;
  private readonly evaluations: Evaluations;
  private readonly failover: Failover;
  private readonly rollouts: Rollouts;
  private readonly drains: Drains;
  private readonly history = new TelemetryHistory();
  private readonly addresses: OverlayAddresses;
  private readonly netTables: NetTables;
  /** Instance output from nodes to HTTP readers. */
  private readonly logs: LogRelay;
  /** Clients following `GET /api/stream`. */
  readonly streams: StreamHub;
  private readonly metrics = createMetrics();
  private readonly internalSecret = newSecret();
  /** Stable across restarts: the cluster manager's MQTT session is persistent. */
  private readonly mqttClientId: string;
  private garbageCollection?: ScheduledTask;
  private registry?: NodeRegistry;
  /** Per-node logins on an external mosquitto (`--mqtt-dynsec`). */
  private dynsec?: DynamicSecurity;
  private controlLag?: ControlLag;

  constructor(
    private readonly config: ClusterManagerConfig,
    private readonly logger: Logger,
  ) {
    this.store = SqliteStore.open(config.dataDir);
    const givenJoinSecret = config.joinToken ? parseJoinToken(config.joinToken).secret : undefined;
    this.joinSecret = loadOrCreateToken(config.dataDir, 'join-token', givenJoinSecret);
    this.tls = config.insecure ? undefined : this.loadTls();
    this.joinToken = formatJoinToken({ secret: this.joinSecret, caFingerprint: this.tls?.caFingerprint });
    writeFileSync(join(config.dataDir, NODE_JOIN_TOKEN_FILE), `${this.joinToken}\n`, { mode: 0o600 });
    this.apiToken = loadOrCreateToken(config.dataDir, 'api-token', config.apiToken);
    this.telemetryToken = loadOrCreateToken(config.dataDir, 'telemetry-token');
    this.tokens = new AccessTokens(this.store, () => this.tls?.caFingerprint);
    this.tokens.keepDefault(DEFAULT_TOKENS.admin, 'admin', this.apiToken);
    this.tokens.keepDefault(DEFAULT_TOKENS.join, 'join', this.joinSecret);
    this.tokens.keepDefault(DEFAULT_TOKENS.telemetry, 'read-only', this.telemetryToken);
    const clusterId = loadOrCreateToken(config.dataDir, 'cluster-id');
    this.mqttClientId = `cluster-manager-${clusterId}`;
    const isOnline = (nodeId: string) => this.liveness.isOnline(nodeId);
    this.addresses = new OverlayAddresses(this.store, config.addressPlan, logger);
    this.outbox = new CommandOutbox(this.store, clusterId, isOnline, logger);
    this.placement = new Placement(this.store, this.outbox, isOnline);
    this.evaluations = new Evaluations(
      this.store,
      this.placement,
      this.outbox,
      (trigger) => this.metrics.evaluations.inc({ trigger }),
      logger,
      (seconds) => this.metrics.placementSeconds.observe(seconds),
    );
    this.reports = new NodeReports(this.store, this.outbox, this.evaluations, logger, (kind, seconds) =>
      this.metrics.commandRoundTrip.observe({ kind }, seconds),
    );
    this.rollouts = new Rollouts(
      this.store,
      this.outbox,
      this.placement,
      this.evaluations,
      this.addresses,
      logger,
    );
    this.jobs = new JobService(
      this.store,
      this.outbox,
      this.placement,
      this.evaluations,
      this.addresses,
      this.rollouts,
      logger,
    );
    this.drains = new Drains(this.store, this.jobs, logger);
    this.netTables = new NetTables({
      store: this.store,
      isOnline,
      relays: this.relays,
      logger,
      sent: (kind, table) => this.metrics.netTables.inc({ kind, table }),
    });
    this.logs = new LogRelay(logger);
    this.liveness = new NodeLiveness(
      this.store,
      {
        timeoutMs: config.nodeTimeoutMs,
        controlLagMs: () => this.controlLag?.lagMs() ?? 0,
      },
      {
        onOnline: (nodeId) => {
          this.outbox.resendTo(nodeId);
          this.evaluations.unblock('node-online');
        },
        onOffline: (nodeId) => {
          this.reports.onNodeOffline(nodeId);
          this.logs.nodeOffline(nodeId);
          // Once for every node a sweep takes offline: none of them is a target for another's instances.
          this.failover.runSoon();
        },
        onFailoverPaused: (paused) => this.metrics.failoverPaused.set(paused ? 1 : 0),
      },
      logger,
    );
    this.streams = new StreamHub(
      this.store,
      { ...DEFAULT_STREAM_LIMITS, maxStreams: config.maxStreams },
      {
        openCount: (count) => this.metrics.streams.set(count),
        cutOff: () => this.metrics.streamsCutOff.inc(),
      },
      logger,
    );
    this.failover = new Failover({
      store: this.store,
      placement: this.placement,
      outbox: this.outbox,
      offlineSince: this.liveness.offlineSince,
      paused: () => this.liveness.failoverPaused,
      logger,
    });
  }

  async start(): Promise<{ httpPort: number; mqttUrl: string }> {
    const { config, logger } = this;
    this.addresses.backfill();
    this.rendezvous = await RendezvousPort.start(config.host, config.rendezvousPort, this.relays, logger);
    let mqttUrl = config.mqttUrl;
    let login = { username: config.mqttUsername, password: config.mqttPassword };
    if (!mqttUrl) {
      this.broker = await EmbeddedBroker.start({
        port: config.mqttPort,
        host: config.host,
        authenticate: (username, password) => this.authenticateMqtt(username, password),
        tls: this.tls,
        logger,
      });
      mqttUrl = `${this.mqttScheme}://${localAddress(config.host)}:${this.broker.port}`;
      login = { username: 'cluster-manager', password: this.internalSecret };
    }
    // A persistent session under a client id of its own: QoS 1 reports and acks that nodes send while this
    // process reconnects (or restarts, with an external broker) wait in the broker instead of being lost.
    this.mqtt = connectMqtt(mqttUrl, {
      ...login,
      ...this.ownBrokerTrust(),
      clientId: this.mqttClientId,
      clean: false,
    });
    this.controlLag = new ControlLag(this.mqtt, this.mqttClientId);
    this.controlLag.start();
    this.mqtt.on('error', (error) => logger.warn({ err: describeConnectError(error) }, 'mqtt error'));
    this.mqtt.on('offline', () => logger.warn('mqtt broker unreachable; retrying'));
    // Nodes are judged by what the broker brings: not while this process is cut off from it.
    this.mqtt.on('close', () => this.liveness.brokerDisconnected());
    if (config.mqttDynsec)
      this.dynsec = new DynamicSecurity(this.mqtt, config.mqttUsername!, this.telemetryToken, logger);
    this.mqtt.on('connect', () => {
      logger.info({ url: mqttUrl }, 'connected to the MQTT broker');
      this.liveness.brokerConnected();
      this.outbox.retry();
      this.dynsec
        ?.prepare()
        .catch((error: Error) =>
          logger.error({ err: error.message }, 'cannot prepare the broker for node logins'),
        );
    });
    subscribeToNodes(this.mqtt, this.nodeMessageHandlers(), logger);
    this.outbox.attach(this.mqtt);
    this.netTables.attach(this.mqtt);
    this.logs.attach(this.mqtt);
    this.liveness.start();
    this.failover.start();
    this.rollouts.start();
    this.drains.start();

    const app = createApi({
      store: this.store,
      jobs: this.jobs,
      liveness: this.liveness,
      allocations: () => this.placement.schedulableNodesById(),
      removeNode: (ref) => this.removeNode(ref),
      nodeOperations: new NodeOperations(this.store, this.evaluations, () => this.drains.process()),
      history: this.history,
      outbox: this.outbox,
      logs: this.logs,
      metrics: this.metrics,
      tokens: this.tokens,
      streams: this.streams,
      clusterCa: this.tls?.ca,
      dashboardDir: dashboardDir(),
      logger,
    });
    if (this.tls) {
      const secure = createHttpsServer({ cert: this.tls.cert, key: this.tls.key }, app);
      this.secureServer = secure;
      this.http = secure;
      this.httpListener = new TlsPort(secure, answerPlainHttp);
    } else {
      this.http = createServer(app);
      this.httpListener = listenerOf(this.http);
    }
    this.io = new SocketServer(this.http, { transports: ['websocket', 'polling'], serveClient: false });
    this.registry = new NodeRegistry(
      this.store,
      {
        isJoinToken: (presented) => this.tokens.authenticate(presented)?.role === 'join',
        registrationRatePerS: config.registrationRatePerS,
        telemetryIntervalMs: config.telemetryIntervalMs,
        overlayEncryption: !config.overlayPlaintext,
        mqttFor: (node, host) => this.mqttLoginFor(node, host),
        rendezvousFor: (host) => ({
          host: host ? new URL(`http://${host}`).hostname.replace(/^\[|\]$/g, '') : localAddress(config.host),
          port: this.rendezvous?.port ?? config.rendezvousPort,
        }),
        ...(this.dynsec
          ? {
              netMqttFor: (node: { id: string }, login: MqttLogin) => ({
                ...login,
                username: `net-${node.id}`,
              }),
              provision: (node: { id: string; secret: string; secretChanged: boolean }) =>
                this.dynsec!.provisionNode(node.id, node.secret, node.secretChanged),
            }
          : {}),
        subnetFor: (nodeId, overlay) => this.addresses.subnetFor(nodeId, overlay),
        onRegistered: (node) => {
          this.liveness.registered(node.id);
          this.evaluations.unblock('node-registered');
        },
      },
      logger,
    );
    this.registry.attach(this.io);
    const listening = this.httpListener.server;
    await new Promise<void>((resolve, reject) => {
      listening.once('error', reject);
      // Registrations of a whole fleet arrive at once after an outage: a deep accept queue (capped by the
      // kernel's net.core.somaxconn) instead of Node's 511.
      listening.listen({ port: config.httpPort, host: config.host, backlog: 8192 }, () => resolve());
    });
    const httpPort = (listening.address() as AddressInfo).port;
    this.garbageCollection = scheduleGarbageCollection(this.store, logger);
    if (this.tls) {
      this.tlsRenewal = setInterval(() => this.renewServerCertificate(), TLS_RENEWAL_CHECK_MS);
      this.tlsRenewal.unref();
    }
    if (!this.tls)
      logger.warn(
        'TLS is OFF (--insecure): the API token, join token, node secrets and job env cross the network in clear text',
      );
    if (config.overlayPlaintext)
      logger.warn(
        'overlay encryption is OFF (--overlay-plaintext): traffic between containers on different workers crosses the network in clear, and workers take overlay packets from anyone who can reach their UDP port',
      );
    return {
      httpPort,
      mqttUrl: this.broker ? `${this.mqttScheme}://${config.host}:${this.broker.port}` : mqttUrl,
    };
  }

  async stop(): Promise<void> {
    await this.garbageCollection?.destroy();
    clearInterval(this.tlsRenewal);
    this.outbox.stop();
    this.controlLag?.stop();
    this.rollouts.stop();
    this.drains.stop();
    this.evaluations.stop();
    this.placement.stop();
    this.netTables.stop();
    this.logs.stop();
    this.failover.stop();
    this.liveness.stop();
    this.streams.close();
    this.io?.disconnectSockets(true);
    await new Promise<void>((resolve) => (this.io ? this.io.close(() => resolve()) : resolve()));
    await this.httpListener?.close();
    await new Promise<void>((resolve) => (this.mqtt ? this.mqtt.end(false, {}, () => resolve()) : resolve()));
    await this.broker?.close();
    await this.rendezvous?.close();
    this.store.close();
  }

  private authenticateMqtt(username: string | undefined, password: string | undefined) {
    if (!username || !password) return null;
    if (username === 'cluster-manager') {
      return sameSecret(password, this.internalSecret) ? ({ role: 'cluster-manager' } as const) : null;
    }
    if (username === 'operator')
      // Telemetry subscribers log in with a read-only token: no admin or deployer token opens the broker.
      return this.tokens.authenticate(password)?.role === 'read-only'
        ? ({ role: 'operator' } as const)
        : null;
    const node = this.store.nodes.get(username);
    if (node && sameSecret(hashSecret(password), node.secretHash))
      return { role: 'node', nodeId: node.id } as const;
    return null;
  }

  /**
   * An operator removes a node (`DELETE /api/nodes/:id`): state first (see removeNode), then the node is cut
   * off: its Socket.IO and MQTT connections close, and its secret opens nothing any more.
   */
  removeNode(ref: string): { id: string; name: string } & NodeRemoval {
    const node = this.store.nodes.find(ref);
    if (!node) throw notFound('node', ref);
    const removal = removeNode(this.store, this.outbox, node);
    this.liveness.forget(node.id);
    this.history.forget(node.id);
    this.relays.remove(node.id);
    this.registry?.disconnect(node.id);
    this.broker?.disconnect([`node-${node.id}`, `net-${node.id}`], [topics.status(node.id)]);
    this.dynsec
      ?.removeNode(node.id)
      .catch((error: Error) =>
        this.logger.error(
          { nodeId: node.id, err: error.message },
          "cannot delete the removed node's broker logins",
        ),
      );
    this.outbox.flush();
    this.evaluations.unblock('node-removed');
    this.logger.warn({ nodeId: node.id, name: node.name, ...removal }, 'node removed by an operator');
    return { id: node.id, name: node.name, ...removal };
  }

  /**
   * Issues a new server certificate when the one in use misses a name or nears its end (loadClusterTls decides),
   * and swaps it into the running HTTPS server and broker: a cluster manager that runs for years never serves
   * an expired certificate. Runs daily; public for tests. True when it renewed.
   */
  renewServerCertificate(): boolean {
    if (!this.tls) return false;
    let next: ClusterTls;
    try {
      next = this.loadTls();
    } catch (error) {
      this.logger.error({ err: (error as Error).message }, 'cannot renew the server certificate');
      return false;
    }
    if (next.cert === this.tls.cert && next.key === this.tls.key) return false;
    this.tls = next;
    this.secureServer?.setSecureContext({ cert: next.cert, key: next.key });
    this.broker?.updateTls({ cert: next.cert, key: next.key });
    this.logger.info('server certificate renewed and in use');
    return true;
  }

  private loadTls(): ClusterTls {
    const { config } = this;
    return loadClusterTls(
      {
        dataDir: config.dataDir,
        extraNames: config.tlsSans,
        host: config.host,
        certFile: config.tlsCertFile,
        keyFile: config.tlsKeyFile,
        caFile: config.tlsCaFile,
      },
      this.logger,
    );
  }

  private get mqttScheme(): 'mqtt' | 'mqtts' {
    return this.tls ? 'mqtts' : 'mqtt';
  }

  /**
   * How this process verifies its own embedded broker: with the cluster CA (127.0.0.1 is in every certificate
   * it issues). A certificate given without its CA names a public host, not loopback: this one connection, to
   * the port this process just bound on its own machine, skips the check.
   */
  private ownBrokerTrust(): { ca?: string; rejectUnauthorized?: boolean } {
    if (!this.broker || !this.tls) return {};
    return this.tls.ca ? { ca: this.tls.ca } : { rejectUnauthorized: false };
  }

  /** Embedded broker: the node logs in as itself. External: the configured node login. */
  private mqttLoginFor(node: { id: string; secret: string }, host: string | undefined): MqttLogin {
    const { config } = this;
    if (this.dynsec)
      return { url: config.advertiseMqttUrl ?? config.mqttUrl!, username: node.id, password: node.secret };
    if (!this.broker) {
      return {
        url: config.advertiseMqttUrl ?? config.mqttUrl!,
        username: config.mqttNodeUsername ?? '',
        password: config.mqttNodePassword ?? '',
      };
    }
    const hostname = host ? new URL(`http://${host}`).hostname : '127.0.0.1';
    return {
      url: config.advertiseMqttUrl ?? `${this.mqttScheme}://${hostname}:${this.broker.port}`,
      username: node.id,
      password: node.secret,
      ...(this.tls?.ca ? { ca: this.tls.ca } : {}),
    };
  }

  private nodeMessageHandlers() {
    const known = (nodeId: string) => this.store.nodes.get(nodeId) !== undefined;
    return {
      telemetry: (nodeId: string, telemetry: Parameters<NodeLiveness['recordTelemetry']>[1]) => {
        if (!known(nodeId)) return;
        this.liveness.recordTelemetry(nodeId, telemetry);
        this.history.record(nodeId, telemetry);
        this.streams.nodeChanged(nodeId);
        this.reports.onInstanceSummaries(nodeId, telemetry.instances);
      },
      status: (nodeId: string, report: Parameters<NodeReports['onStatus']>[1]) => {
        if (!known(nodeId)) return;
        this.liveness.seen(nodeId);
        this.reports.onStatus(nodeId, report);
      },
      ack: (nodeId: string, ack: Parameters<NodeReports['onAck']>[1]) => {
        if (!known(nodeId)) return;
        this.liveness.seen(nodeId);
        this.outbox.acked(ack.id, nodeId);
        this.reports.onAck(nodeId, ack);
      },
      presence: (nodeId: string, online: boolean) => {
        if (!known(nodeId)) return;
        // `online` is published on every MQTT connect: whatever the node has not acked goes out again.
        if (online) {
          this.liveness.seen(nodeId);
          this.outbox.resendTo(nodeId);
        } else this.liveness.lastWill(nodeId);
      },
      netAnnounce: (nodeId: string, announce: Parameters<NetTables['onAnnounce']>[1]) => {
        if (known(nodeId)) this.netTables.onAnnounce(nodeId, announce);
      },
      netQuery: (nodeId: string, query: Parameters<NetTables['onQuery']>[1]) => {
        if (known(nodeId)) this.netTables.onQuery(nodeId, query);
      },
      logStream: (nodeId: string, message: Parameters<LogRelay['onMessage']>[1]) => {
        if (known(nodeId)) this.logs.onMessage(nodeId, message);
      },
      rejected: (topic: string, reason: string) => {
        this.metrics.rejectedMessages.inc({ topic_kind: topic.split('/').slice(2).join('/') || 'other' });
        this.logger.warn({ topic, reason }, 'dropped a malformed node message');
      },
    };
  }
}

/** A plain server as what listens on a port: itself, closed as the HTTP server closes its connections. */
function listenerOf(server: HttpServer): { server: NetServer; close: () => Promise<void> } {
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        if (!server.listening) resolve();
      }),
  };
}

/** Where this process reaches its own embedded broker: it listens on `host` only, unless that is a wildcard. */
function localAddress(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
