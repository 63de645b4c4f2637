import mqtt, { type MqttClient } from 'mqtt';
import { io, type Socket } from 'socket.io-client';
import type { Command, NodeInfoInput, RegisterAck } from '../../shared/index.js';
import { topics } from '../../shared/index.js';

/**
 * A bare node for cluster manager tests: a real Socket.IO registration and a real MQTT session that records
 * the commands it receives and acks them. It runs nothing; node engine tests cover that.
 */
export class TestNode {
  readonly commands: Command[] = [];
  mqtt?: MqttClient;
  socket?: Socket;
  ack?: Extract<RegisterAck, { nodeId: string }>;

  /** `cm.ca`: the cluster CA to verify the cluster manager and its broker with (none for `--insecure`). */
  constructor(
    private readonly cm: { url: string; ca?: string },
    readonly info: NodeInfoInput,
  ) {}

  /**
   * A node online in a cluster manager: registered (with the join token, or the identity given), logged in to
   * MQTT (acking every command unless `autoAck` is false) and one telemetry sent.
   */
  static async join(
    cm: { url: string; joinToken: string; ca?: string },
    name: string,
    options: { autoAck?: boolean; auth?: { nodeId: string; nodeSecret: string } } = {},
  ): Promise<TestNode> {
    const node = new TestNode(cm, TestNode.info(name));
    await node.register(options.auth ?? { token: cm.joinToken });
    await node.connectMqtt(options.autoAck ?? true);
    await node.sendTelemetry();
    return node;
  }

  static info(name: string, overrides: Partial<NodeInfoInput> = {}): NodeInfoInput {
    return {
      name,
      arch: 'amd64',
      os: 'linux',
      cpus: 4,
      memoryBytes: 8 * 1024 ** 3,
      gpus: [],
      sensors: [],
      runtimes: ['docker', 'native'],
      labels: {},
      version: 'test',
      ...overrides,
    };
  }

  /** Connects to `/init` with `auth` and emits `register`; resolves with the ack or rejects with connect_error. */
  register(auth: Record<string, unknown>, info: unknown = this.info): Promise<RegisterAck> {
    return new Promise((resolve, reject) => {
      const socket = io(`${this.cm.url}/init`, {
        transports: ['websocket'],
        ca: this.cm.ca,
        auth,
        reconnection: false,
      });
      this.socket = socket;
      socket.on('connect_error', (error) => {
        socket.close();
        reject(error);
      });
      socket.on('connect', () => {
        socket.emit('register', info, (ack: RegisterAck) => {
          if ('nodeId' in ack) this.ack = ack;
          resolve(ack);
        });
      });
    });
  }

  /** Logs in to MQTT with what registration handed out; acks every command unless `autoAck` is false. */
  async connectMqtt(autoAck = true): Promise<MqttClient> {
    const ack = this.ack;
    if (!ack) throw new Error('register first');
    const client = mqtt.connect(ack.mqtt.url, {
      protocolVersion: 4,
      username: ack.mqtt.username || undefined,
      password: ack.mqtt.password || undefined,
      ca: ack.mqtt.ca,
      clientId: `node-${ack.nodeId}`,
      reconnectPeriod: 0,
      will: { topic: topics.status(ack.nodeId), payload: Buffer.from('offline'), qos: 1, retain: true },
    });
    this.mqtt = client;
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    client.on('message', (topic, payload) => {
      // Other topics a test subscribes to (a node's log requests) are the test's own.
      if (topic !== topics.control(ack.nodeId)) return;
      const command = JSON.parse(payload.toString()) as Command;
      this.commands.push(command);
      if (autoAck) this.publish(topics.controlAck(ack.nodeId), { id: command.id, ok: true });
    });
    await client.subscribeAsync(topics.control(ack.nodeId), { qos: 1 });
    await client.publishAsync(topics.status(ack.nodeId), 'online', { qos: 1, retain: true });
    return client;
  }

  /**
   * Publishes at QoS 1. A caller that awaits it sees a failure; one that does not (an automatic ack, a report
   * fired and forgotten) leaves no unhandled rejection behind when `close()` ends the client with the publish
   * still in flight ("Connection closed").
   */
  publish(topic: string, payload: unknown): Promise<unknown> {
    const published = this.mqtt!.publishAsync(
      topic,
      typeof payload === 'string' ? payload : JSON.stringify(payload),
      { qos: 1 },
    );
    published.catch(() => undefined);
    return published;
  }

  /** One telemetry message with plausible numbers. */
  /** A telemetry message with fixed numbers; `overrides` replaces parts of it (cpu, gpus, sensors...). */
  sendTelemetry(
    instances: { job: string; instance: number; generation: number; status: 'running' }[] = [],
    overrides: Record<string, unknown> = {},
  ) {
    const nodeId = this.ack!.nodeId;
    return this.publish(topics.information(nodeId), {
      nodeId,
      ts: Date.now(),
      cpu: { percent: 12.5, cores: 4, load1: 0.3 },
      memory: { totalBytes: 8e9, usedBytes: 2e9, percent: 25 },
      disk: { totalBytes: 1e11, usedBytes: 5e10, percent: 50 },
      gpus: [],
      sensors: [],
      instances,
      ...overrides,
    });
  }

  async close(): Promise<void> {
    this.socket?.close();
    await this.mqtt?.endAsync(true);
  }
}
