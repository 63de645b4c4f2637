import {
  type CommandAck,
  connectMqtt,
  describeConnectError,
  type InstanceStatusReport,
  type JobResources,
  type Logger,
  type LogStreamMessage,
  type MqttClient,
  type MqttLogin,
  type NodeTelemetry,
  topics,
} from '../shared/index.js';
import { monotonicMs } from '../shared/monotonic-clock.js';
import { withDeadline } from './deadline.js';

/** How long a close waits for messages in flight before it drops the connection. */
const CLOSE_GRACE_MS = 3000;
/**
 * A link that cannot connect for this long says so, and says it (or a refused login) at most this often: the
 * broker may have moved, and each saying costs the cluster manager a registration.
 */
const CANNOT_CONNECT_EVERY_MS = 30_000;
/** CONNACK return codes of MQTT 3.1.1 that refuse the login (4: bad user name or password, 5: not authorized). */
const LOGIN_REFUSED = new Set([4, 5]);

export interface MqttLinkOptions {
  nodeId: string;
  settings: MqttLogin;
  logger: Logger;
  /** Every message on `nodes/<id>/control`, raw: the command handler parses it. */
  onCommand: (payload: Buffer) => void;
  /** Every message on `nodes/<id>/logs/control`, raw: the log streams parse it. */
  onLogControl?: (payload: Buffer) => void;
  /**
   * Called on every connect, e.g. to send the current status of every instance again; `again`: the link had
   * been up before and dropped.
   */
  onConnect?: (again: boolean) => void;
  /**
   * The link cannot get through: the broker refused the login, or nothing answered for 30 s. The cluster
   * manager may have forgotten the node or moved its broker: the node asks it again by registering.
   */
  onCannotConnect?: (why: 'login refused' | 'unreachable') => void;
}

/**
 * The node's MQTT session: a persistent session (clean: false) so QoS 1 commands sent while the node was away
 * arrive when it is back; a retained `online` on each connect and `offline` as the last will.
 */
export class MqttLink {
  readonly nodeId: string;
  readonly settings: MqttLogin;
  private readonly client: MqttClient;
  private readonly logger: Logger;
  /**
   * Status reports made while disconnected, the latest per instance only: a node cut off for a day while its
   * instances churn holds one report per instance, not one per change, and the cluster manager gets where each
   * stands when it is back.
   */
  private readonly unsent = new Map<string, InstanceStatusReport>();
  private everConnected = false;
  /** Since when (monotonic ms) the link has been down. */
  private downSince = monotonicMs();
  /** When `onCannotConnect` was last called (monotonic ms). */
  private saidCannotConnectAt = Number.NEGATIVE_INFINITY;
  private readonly onCannotConnect: MqttLinkOptions['onCannotConnect'];

  constructor(options: MqttLinkOptions) {
    this.nodeId = options.nodeId;
    this.settings = options.settings;
    this.onCannotConnect = options.onCannotConnect;
    this.logger = options.logger.child({ part: 'mqtt', url: options.settings.url });
    const statusTopic = topics.status(this.nodeId);
    const controlTopic = topics.control(this.nodeId);
    const logsControlTopic = topics.logsControl(this.nodeId);
    this.client = connectMqtt(options.settings.url, {
      username: options.settings.username,
      password: options.settings.password,
      ca: options.settings.ca,
      clientId: `node-${this.nodeId}`,
      clean: false,
      will: { topic: statusTopic, payload: Buffer.from('offline'), retain: true, qos: 1 },
    });
    this.client.on('connect', () => {
      this.logger.info('MQTT connected');
      this.client.publish(statusTopic, 'online', { qos: 1, retain: true });
      this.client.subscribe(controlTopic, { qos: 1 }, (error) => {
        if (error) this.logger.error({ err: error.message }, 'cannot subscribe to the control topic');
      });
      // QoS 0: a log request is for now; none waits in the broker for a node that is away.
      this.client.subscribe(logsControlTopic, { qos: 0 }, (error, granted) => {
        if (error || granted?.some((grant) => grant.qos === 128))
          this.logger.error(
            { err: error?.message ?? 'refused by the broker' },
            'cannot subscribe to the log control topic: logs cannot be read from this node',
          );
      });
      const unsent = [...this.unsent.values()];
      this.unsent.clear();
      for (const report of unsent) this.publishStatus(report);
      const again = this.everConnected;
      this.everConnected = true;
      options.onConnect?.(again);
    });
    this.client.on('close', () => {
      if (!this.client.connected && monotonicMs() - this.downSince >= CANNOT_CONNECT_EVERY_MS)
        this.cannotConnect('unreachable');
    });
    this.client.on('message', (topic, payload) => {
      if (topic === controlTopic) options.onCommand(payload);
      else if (topic === logsControlTopic) options.onLogControl?.(payload);
    });
    this.client.on('error', (error) => {
      this.logger.warn({ err: describeConnectError(error) }, 'MQTT error');
      if (LOGIN_REFUSED.has((error as { code?: unknown }).code as number))
        this.cannotConnect('login refused');
    });
    this.client.on('offline', () => {
      this.downSince = monotonicMs();
      this.logger.warn('MQTT offline; reconnecting');
    });
  }

  private cannotConnect(why: 'login refused' | 'unreachable'): void {
    const now = monotonicMs();
    if (now - this.saidCannotConnectAt < CANNOT_CONNECT_EVERY_MS) return;
    this.saidCannotConnectAt = now;
    this.onCannotConnect?.(why);
  }

  get connected(): boolean {
    return this.client.connected;
  }

  publishStatus(report: InstanceStatusReport): void {
    if (!this.connected) {
      this.unsent.set(`${report.job}/${report.instance}`, report);
      return;
    }
    this.publish(topics.jobStatus(this.nodeId), report, 1);
  }

  /** Status reports waiting for the connection (one per instance at most). */
  get unsentStatuses(): number {
    return this.unsent.size;
  }

  /** Messages mqtt.js holds for the connection (acks, and reports made as the link went down). */
  get queuedMessages(): number {
    const queue = (this.client as unknown as { queue?: unknown[] }).queue;
    return Array.isArray(queue) ? queue.length : 0;
  }

  publishAck(ack: CommandAck): void {
    this.publish(topics.controlAck(this.nodeId), ack, 1);
  }

  publishTelemetry(telemetry: NodeTelemetry): void {
    if (this.connected) this.publish(topics.information(this.nodeId), telemetry, 0);
  }

  publishResources(resources: JobResources): void {
    if (this.connected) this.publish(topics.jobResources(this.nodeId), resources, 0);
  }

  /** A log stream's message, QoS 0, only while connected: false when it did not go out. */
  publishLogStream(message: LogStreamMessage): boolean {
    if (!this.connected) return false;
    this.publish(topics.logsStream(this.nodeId), message, 0);
    return true;
  }

  /** QoS 1 messages published while offline wait in mqtt.js's queue and go out on reconnect. */
  private publish(topic: string, payload: unknown, qos: 0 | 1): void {
    this.client.publish(topic, JSON.stringify(payload), { qos }, (error) => {
      if (error) this.logger.warn({ topic, err: error.message }, 'publish failed');
    });
  }

  /** Closes the session; with `offline` true the retained status says so (a clean shutdown sends no will). */
  async close(offline = true): Promise<void> {
    if (offline && this.client.connected) {
      await new Promise<void>((resolve) => {
        this.client.publish(topics.status(this.nodeId), 'offline', { qos: 1, retain: true }, () => resolve());
        setTimeout(resolve, 1000).unref();
      });
    }
    // Messages in flight get a moment to go out; a broker that does not answer (the node is switching away from
    // it) cannot hold the close.
    if (!this.client.connected) await this.client.endAsync(true);
    else
      await withDeadline('MQTT close', CLOSE_GRACE_MS, () => this.client.endAsync()).catch(() =>
        this.client.endAsync(true),
      );
  }
}
