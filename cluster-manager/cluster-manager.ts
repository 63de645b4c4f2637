import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ScheduledTask } from 'node-cron';
import { Server as SocketServer } from 'socket.io';
import { connectMqtt, type Logger, type MqttClient } from '../shared/index.js';
import { createApi } from './api/app.js';
import { EmbeddedBroker } from './broker/embedded-broker.js';
import type { ClusterManagerConfig } from './config.js';
import { dashboardDir } from './dashboard/index.js';
import { CommandOutbox } from './dispatch/command-outbox.js';
import { subscribeToNodes } from './dispatch/node-messages.js';
import { scheduleGarbageCollection } from './garbage-collection.js';
import { Evaluations } from './jobs/evaluations.js';
import { Failover } from './jobs/failover.js';
import { JobService } from './jobs/job-service.js';
import { NodeReports } from './jobs/node-reports.js';
import { Placement } from './jobs/placement.js';
import { ControlLag } from './liveness/control-lag.js';
import { NodeLiveness } from './liveness/node-liveness.js';
import { createMetrics } from './metrics.js';
import { NetTables } from './network/net-tables.js';
import { OverlayAddresses } from './network/overlay-addresses.js';
import { NodeRegistry } from './registry/node-registry.js';
import { hashSecret, loadOrCreateToken, newSecret, sameSecret } from './secrets.js';
import { SqliteStore, type Store } from './store/index.js';

/** Wires the cluster manager's parts together: store, broker, registry, dispatch, liveness, API. */
export class ClusterManager {
  readonly store: Store;
  readonly joinToken: string;
  readonly apiToken: string;
  readonly jobs: JobService;
  private broker?: EmbeddedBroker;
  private mqtt?: MqttClient;
  private http?: HttpServer;
  private io?: SocketServer;
  private readonly outbox: CommandOutbox;
  private readonly liveness: NodeLiveness;
  private readonly reports: NodeReports;
  private readonly placement: Placement;
  private readonly evaluations: Evaluations;
  private readonly failover: Failover;
  private readonly addresses: OverlayAddresses;
  private readonly netTables: NetTables;
  private readonly metrics = createMetrics();
  private readonly internalSecret = newSecret();
  /** Stable across restarts: the cluster manager's MQTT session is persistent. */
  private readonly mqttClientId: string;
  private garbageCollection?: ScheduledTask;
  private controlLag?: ControlLag;

  constructor(
    private readonly config: ClusterManagerConfig,
    private readonly logger: Logger,
  ) {
    this.store = SqliteStore.open(config.dataDir);
    this.joinToken = loadOrCreateToken(config.dataDir, 'join-token', config.joinToken);
    this.apiToken = loadOrCreateToken(config.dataDir, 'api-token', config.apiToken);
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
    );
    this.reports = new NodeReports(this.store, this.outbox, this.evaluations, logger);
    this.jobs = new JobService(
      this.store,
      this.outbox,
      this.placement,
      this.evaluations,
      this.addresses,
      logger,
    );
    this.netTables = new NetTables({
      store: this.store,
      isOnline,
      logger,
      sent: (kind, table) => this.metrics.netTables.inc({ kind, table }),
    });
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
          // Once for every node a sweep takes offline: none of them is a target for another's instances.
          this.failover.runSoon();
        },
        onFailoverPaused: (paused) => this.metrics.failoverPaused.set(paused ? 1 : 0),
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
    let mqttUrl = config.mqttUrl;
    let login = { username: config.mqttUsername, password: config.mqttPassword };
    if (!mqttUrl) {
      this.broker = await EmbeddedBroker.start({
        port: config.mqttPort,
        host: config.host,
        authenticate: (username, password) => this.authenticateMqtt(username, password),
        logger,
      });
      mqttUrl = `mqtt://${localAddress(config.host)}:${this.broker.port}`;
      login = { username: 'cluster-manager', password: this.internalSecret };
    }
    // A persistent session under a client id of its own: QoS 1 reports and acks that nodes send while this
    // process reconnects (or restarts, with an external broker) wait in the broker instead of being lost.
    this.mqtt = connectMqtt(mqttUrl, { ...login, clientId: this.mqttClientId, clean: false });
    this.controlLag = new ControlLag(this.mqtt, this.mqttClientId);
    this.controlLag.start();
    this.mqtt.on('error', (error) => logger.warn({ err: error.message }, 'mqtt error'));
    this.mqtt.on('offline', () => logger.warn('mqtt broker unreachable; retrying'));
    // Nodes are judged by what the broker brings: not while this process is cut off from it.
    this.mqtt.on('close', () => this.liveness.brokerDisconnected());
    this.mqtt.on('connect', () => {
      logger.info({ url: mqttUrl }, 'connected to the MQTT broker');
      this.liveness.brokerConnected();
      this.outbox.retry();
    });
    subscribeToNodes(this.mqtt, this.nodeMessageHandlers(), logger);
    this.outbox.attach(this.mqtt);
    this.netTables.attach(this.mqtt);
    this.liveness.start();
    this.failover.start();

    const app = createApi({
      store: this.store,
      jobs: this.jobs,
      liveness: this.liveness,
      allocations: () => this.placement.schedulableNodesById(),
      outbox: this.outbox,
      metrics: this.metrics,
      apiToken: this.apiToken,
      dashboardDir: dashboardDir(),
      logger,
    });
    this.http = createServer(app);
    this.io = new SocketServer(this.http, { transports: ['websocket', 'polling'], serveClient: false });
    new NodeRegistry(
      this.store,
      {
        joinToken: this.joinToken,
        telemetryIntervalMs: config.telemetryIntervalMs,
        mqttFor: (node, host) => this.mqttLoginFor(node, host),
        subnetFor: (nodeId, overlay) => this.addresses.subnetFor(nodeId, overlay),
        onRegistered: (node) => {
          this.liveness.registered(node.id);
          this.evaluations.unblock('node-registered');
        },
      },
      logger,
    ).attach(this.io);
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      // Registrations of a whole fleet arrive at once after an outage: a deep accept queue (capped by the
      // kernel's net.core.somaxconn) instead of Node's 511.
      this.http!.listen({ port: config.httpPort, host: config.host, backlog: 8192 }, () => resolve());
    });
    const httpPort = (this.http.address() as AddressInfo).port;
    this.garbageCollection = scheduleGarbageCollection(this.store, logger);
    return { httpPort, mqttUrl: this.broker ? `mqtt://${config.host}:${this.broker.port}` : mqttUrl };
  }

  async stop(): Promise<void> {
    await this.garbageCollection?.destroy();
    this.outbox.stop();
    this.controlLag?.stop();
    this.evaluations.stop();
    this.placement.stop();
    this.netTables.stop();
    this.failover.stop();
    this.liveness.stop();
    this.io?.disconnectSockets(true);
    await new Promise<void>((resolve) => (this.io ? this.io.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (this.mqtt ? this.mqtt.end(false, {}, () => resolve()) : resolve()));
    await this.broker?.close();
    this.store.close();
  }

  private authenticateMqtt(username: string | undefined, password: string | undefined) {
    if (!username || !password) return null;
    if (username === 'cluster-manager') {
      return sameSecret(password, this.internalSecret) ? ({ role: 'cluster-manager' } as const) : null;
    }
    if (username === 'operator')
      return sameSecret(password, this.apiToken) ? ({ role: 'operator' } as const) : null;
    const node = this.store.nodes.get(username);
    if (node && sameSecret(hashSecret(password), node.secretHash))
      return { role: 'node', nodeId: node.id } as const;
    return null;
  }

  /** Embedded broker: the node logs in as itself. External: the configured node login. */
  private mqttLoginFor(node: { id: string; secret: string }, host: string | undefined) {
    const { config } = this;
    if (!this.broker) {
      return {
        url: config.advertiseMqttUrl ?? config.mqttUrl!,
        username: config.mqttNodeUsername ?? '',
        password: config.mqttNodePassword ?? '',
      };
    }
    const hostname = host ? new URL(`http://${host}`).hostname : '127.0.0.1';
    return {
      url: config.advertiseMqttUrl ?? `mqtt://${hostname}:${this.broker.port}`,
      username: node.id,
      password: node.secret,
    };
  }

  private nodeMessageHandlers() {
    const known = (nodeId: string) => this.store.nodes.get(nodeId) !== undefined;
    return {
      telemetry: (nodeId: string, telemetry: Parameters<NodeLiveness['recordTelemetry']>[1]) => {
        if (!known(nodeId)) return;
        this.liveness.recordTelemetry(nodeId, telemetry);
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
      rejected: (topic: string, reason: string) => {
        this.metrics.rejectedMessages.inc({ topic_kind: topic.split('/').slice(2).join('/') || 'other' });
        this.logger.warn({ topic, reason }, 'dropped a malformed node message');
      },
    };
  }
}

/** Where this process reaches its own embedded broker: it listens on `host` only, unless that is a wildcard. */
function localAddress(host: string): string {
  if (host === '' || host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
