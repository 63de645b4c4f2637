import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { MqttLink } from '../../node-engine/mqtt-link.js';
import { type InstanceStatusReport, topics } from '../../shared/index.js';
import { waitFor } from '../helpers/wait.js';

/**
 * One aedes broker, reached by the node on a port that can be cut (its listener closed, its connections dropped)
 * and opened again, and by a watcher on a port that stays: the watcher's subscription outlives the cut.
 */
class Broker {
  private broker: Aedes | undefined;
  private nodeSide: Server | undefined;
  private watchSide: Server | undefined;
  private readonly sockets = new Set<Socket>();
  nodePort = 0;
  watchPort = 0;

  async start(): Promise<void> {
    this.broker = await Aedes.createBroker();
    this.watchSide = createServer(this.broker.handle);
    await new Promise<void>((resolve) => this.watchSide!.listen(0, '127.0.0.1', resolve));
    this.watchPort = (this.watchSide.address() as { port: number }).port;
    await this.open();
  }

  async open(): Promise<void> {
    this.nodeSide = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      this.broker!.handle(socket);
    });
    await new Promise<void>((resolve) => this.nodeSide!.listen(this.nodePort, '127.0.0.1', resolve));
    this.nodePort = (this.nodeSide.address() as { port: number }).port;
  }

  async cut(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.nodeSide?.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  async stop(): Promise<void> {
    await this.cut();
    await new Promise<void>((resolve) => this.watchSide?.close(() => resolve()));
    await new Promise<void>((resolve) => this.broker?.close(() => resolve()));
  }
}

describe('a node engine cut off from its broker', () => {
  const broker = new Broker();
  let link: MqttLink | undefined;
  let watcher: mqtt.MqttClient | undefined;
  afterAll(async () => {
    await link?.close(false);
    await watcher?.endAsync(true);
    await broker.stop();
  });

  it('keeps one status report per instance while its instances churn, and sends the latest of each on return', async () => {
    await broker.start();
    const nodeId = 'offline-node';
    watcher = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.watchPort}`, { clientId: 'watcher' });
    const received: InstanceStatusReport[] = [];
    watcher.on('message', (_topic, payload) => received.push(JSON.parse(payload.toString())));
    await watcher.subscribeAsync(topics.jobStatus(nodeId), { qos: 1 });
    link = new MqttLink({
      nodeId,
      settings: { url: `mqtt://127.0.0.1:${broker.nodePort}`, username: 'n', password: 'p' },
      logger: pino({ level: 'silent' }),
      onCommand: () => {},
    });
    await waitFor(() => link!.connected, 'connected');
    await broker.cut();
    await waitFor(() => !link!.connected, 'the link noticing the broker is gone');

    // A day of churn, compressed: 20,000 changes of 5 instances.
    const report = (instance: number, n: number): InstanceStatusReport => ({
      job: 'j1',
      instance,
      generation: 1,
      status: n % 2 === 0 ? 'running' : 'exited',
      detail: `change ${n}`,
      containerId: null,
      restarts: n,
      ts: n,
    });
    const heapBefore = process.memoryUsage().heapUsed;
    for (let n = 0; n < 20_000; n++) link.publishStatus(report(n % 5, n));
    expect(link.unsentStatuses).toBe(5);
    expect(link.queuedMessages).toBeLessThanOrEqual(2);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(20 * 1024 * 1024);

    await broker.open();
    await waitFor(() => received.length >= 5, 'the latest status of each instance', 30_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(received.map((r) => `${r.instance}:${r.detail}`).sort()).toEqual(
      ['0:change 19995', '1:change 19996', '2:change 19997', '3:change 19998', '4:change 19999'].sort(),
    );
    expect(link.unsentStatuses).toBe(0);
  }, 60_000);
});
