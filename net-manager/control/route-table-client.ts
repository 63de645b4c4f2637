import {
  connectMqtt,
  describeConnectError,
  describeProblems,
  type Logger,
  type MqttClient,
  type MqttLogin,
  type NetAnnounce,
  type NetTable,
  NetTableSchema,
  parseJson,
  topics,
} from '../../shared/index.js';

export interface RouteTableClientOptions {
  nodeId: string;
  mqtt: MqttLogin;
  /** What to announce on every (re)connect: this worker's overlay endpoint. */
  announcement: () => NetAnnounce;
  /** A route table from the cluster manager (an answer or a push), parsed with its schema. */
  onTable: (table: NetTable) => void;
  /** Called on every (re)connect: pushes may have been missed while away, so what is in use is asked again. */
  onConnect: () => void;
  /** A message that did not parse: counted and dropped. */
  onRejected: (reason: string) => void;
  logger: Logger;
}

/**
 * The net manager's side of the control plane: table queries to the cluster manager on
 * `nodes/<id>/net/query`, answers and pushes on `nodes/<id>/net/table`, the endpoint on `net/announce`.
 * It logs in with the node's MQTT credentials under its own client id, and sets no last will: the node
 * engine's session says whether the node is there.
 */
export class RouteTableClient {
  private readonly client: MqttClient;
  private readonly tableTopic: string;

  constructor(private readonly options: RouteTableClientOptions) {
    const { nodeId, mqtt, logger } = options;
    this.tableTopic = topics.netTable(nodeId);
    this.client = connectMqtt(mqtt.url, {
      username: mqtt.username,
      password: mqtt.password,
      ca: mqtt.ca,
      clientId: `net-${nodeId}`,
      clean: true,
    });
    this.client.on('connect', () => {
      logger.info({ url: mqtt.url }, 'control plane connected');
      this.client.subscribe(this.tableTopic, { qos: 1 }, (error) => {
        if (error) logger.error({ err: error.message }, 'cannot subscribe to route tables');
      });
      this.publish(topics.netAnnounce(nodeId), options.announcement());
      options.onConnect();
    });
    this.client.on('error', (error) =>
      logger.warn({ err: describeConnectError(error) }, 'control plane error'),
    );
    this.client.on('offline', () => logger.warn('control plane unreachable; cached routes keep serving'));
    this.client.on('message', (topic, payload) => {
      if (topic === this.tableTopic) this.received(payload);
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** Asks which job owns `ip`; the answer arrives through `onTable`. Not connected: nothing is sent. */
  query(ip: string): boolean {
    if (!this.client.connected) return false;
    this.publish(topics.netQuery(this.options.nodeId), { ip, ts: Date.now() });
    return true;
  }

  /**
   * Asks which node has this overlay key (a handshake came from it); the answer is a `peer` table. `punch`: a
   * handshake to it is starting, and the cluster manager should have it reach out too.
   */
  queryKey(key: string, punch = false): boolean {
    if (!this.client.connected) return false;
    this.publish(topics.netQuery(this.options.nodeId), { key, ...(punch ? { punch } : {}), ts: Date.now() });
    return true;
  }

  /** Says the endpoint again (the public IP or the subnet changed). */
  announce(): void {
    if (this.client.connected)
      this.publish(topics.netAnnounce(this.options.nodeId), this.options.announcement());
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.client.end(false, {}, () => resolve()));
  }

  private publish(topic: string, payload: unknown): void {
    this.client.publish(topic, JSON.stringify(payload), { qos: 1 }, (error) => {
      if (error) this.options.logger.warn({ topic, err: error.message }, 'control plane publish failed');
    });
  }

  private received(payload: Buffer): void {
    const json = parseJson(payload);
    const parsed = json === undefined ? undefined : NetTableSchema.safeParse(json);
    if (!parsed?.success) {
      const reason = parsed ? describeProblems(parsed.error) : 'not JSON';
      this.options.logger.warn({ reason }, 'dropped a malformed route table');
      this.options.onRejected(reason);
      return;
    }
    this.options.onTable(parsed.data);
  }
}
