import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { Aedes, type AuthorizePublishHandler } from 'aedes';
import mqtt from 'mqtt';
import { Server as SocketServer } from 'socket.io';
import {
  type Command,
  type CommandAck,
  type InstanceStatusReport,
  JobSpecSchema,
  topics,
} from '../../shared/index.js';
import { BINS, Program } from './programs.js';

/**
 * What a node engine needs of a cluster manager, in this process: a Socket.IO `/init` that registers every node
 * as `nodeId`, an aedes broker whose publishes a test can intercept, and an operator client that sends commands
 * and records the node's acks and status reports. For tests of the node engine as a program (kill -9, its
 * clock) where the test must control what reaches the broker.
 */
export class FakeClusterManager {
  readonly acks: CommandAck[] = [];
  readonly reports: InstanceStatusReport[] = [];
  /** Called for each publish a client makes; return false to hold it (it never reaches the broker). */
  admit: (topic: string) => boolean = () => true;
  url = '';
  private broker!: Aedes;
  private brokerServer!: Server;
  private http!: HttpServer;
  private operator!: mqtt.MqttClient;

  constructor(readonly nodeId: string) {}

  async start(): Promise<void> {
    this.broker = await Aedes.createBroker();
    const authorizePublish: AuthorizePublishHandler = (_client, packet, done) => {
      if (this.admit(packet.topic)) done(null);
    };
    this.broker.authorizePublish = authorizePublish;
    this.brokerServer = createServer(this.broker.handle);
    await new Promise<void>((resolve) => this.brokerServer.listen(0, '127.0.0.1', resolve));
    const mqttUrl = `mqtt://127.0.0.1:${(this.brokerServer.address() as { port: number }).port}`;

    this.http = createHttpServer();
    const io = new SocketServer(this.http);
    io.of('/init').on('connection', (socket) => {
      socket.on('register', (_info: unknown, ack: (answer: unknown) => void) =>
        ack({
          nodeId: this.nodeId,
          nodeSecret: 'fake-secret',
          mqtt: { url: mqttUrl, username: this.nodeId, password: 'pw' },
          telemetryIntervalMs: 1000,
        }),
      );
    });
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.http.address() as { port: number }).port}`;

    this.operator = await mqtt.connectAsync(mqttUrl, { protocolVersion: 4 });
    this.operator.on('message', (topic, payload) => {
      const message = JSON.parse(payload.toString());
      if (topic === topics.controlAck(this.nodeId)) this.acks.push(message);
      if (topic === topics.jobStatus(this.nodeId)) this.reports.push(message);
    });
    await this.operator.subscribeAsync([topics.controlAck(this.nodeId), topics.jobStatus(this.nodeId)], {
      qos: 1,
    });
  }

  async stop(): Promise<void> {
    await this.operator?.endAsync();
    await new Promise<void>((resolve) => (this.broker ? this.broker.close(() => resolve()) : resolve()));
    this.brokerServer?.close();
    this.http?.close();
  }

  /** The node engine program joined to this cluster manager, with its Docker runtime; `env` for its process. */
  async startEngine(dataDir: string, env: Record<string, string> = {}): Promise<Program> {
    const engine = Program.start(
      'node-engine',
      BINS.nodeEngine,
      [
        ...['--cluster-manager', this.url, '--join-token', 'join-1', '--name', this.nodeId],
        ...['--data-dir', dataDir, '--port', '0', '--runtimes', 'docker'],
        ...['--net-manager', `${dataDir}/no-net-manager.sock`, '--telemetry-interval', '1000'],
      ],
      env,
    );
    await engine.waitForLog(/MQTT connected/);
    return engine;
  }

  /** A deploy of instance 0 of a job of `spec` (JobSpecSchema's input), generation 1, with a new command id. */
  deploy(jobId: string, spec: Record<string, unknown>): Command {
    return {
      id: crypto.randomUUID(),
      command: 'deploy',
      job: { id: jobId, ...JobSpecSchema.parse({ name: jobId, ...spec }) },
      instance: 0,
      generation: 1,
      cluster: [],
      worker: [this.nodeId],
      issuedAt: Date.now(),
    };
  }

  async send(command: Command): Promise<void> {
    await this.operator.publishAsync(topics.control(this.nodeId), JSON.stringify(command), { qos: 1 });
  }
}
