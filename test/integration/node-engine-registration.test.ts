import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { Server as SocketServer } from 'socket.io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, optionSpecs } from '../../node-engine/config.js';
import { NodeEngine } from '../../node-engine/node-engine.js';
import {
  type InstanceStatusReport,
  JobResourcesSchema,
  type NodeInfo,
  NodeInfoSchema,
  type NodeTelemetry,
  NodeTelemetrySchema,
  parseOptions,
  topics,
} from '../../shared/index.js';

const nodeId = `ne-reg-test-${process.pid}`;
const logger = pino({ level: 'silent' });

let broker: Aedes;
let brokerServer: Server;
let mqttUrl: string;
let http: HttpServer;
let cmUrl: string;
let dataDir: string;
let operator: mqtt.MqttClient;
/** What the fake cluster manager saw. */
const auths: Array<Record<string, unknown>> = [];
const registrations: NodeInfo[] = [];
let acceptIdentity = true;
let issuedId = nodeId;
/** How long the fake cluster manager holds its answer to the next registration. */
let nextAckDelayMs = 0;
let netManager: HttpServer | undefined;
/** The fake cluster manager's `/init` namespace. */
let init: ReturnType<SocketServer['of']>;
const telemetry: NodeTelemetry[] = [];
const reports: InstanceStatusReport[] = [];
const retained = new Map<string, string>();
const engines: NodeEngine[] = [];
const engineApis: { engine: NodeEngine; api: string }[] = [];

async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Closes a client's connection from the broker's side (aedes keeps its clients by id, untyped). */
function dropBrokerClient(clientId: string): void {
  (broker as unknown as { clients: Record<string, { close(): void }> }).clients[clientId]?.close();
}

function containerIds(id: string): string[] {
  return execFileSync('docker', ['ps', '-q', '--no-trunc', '--filter', `label=edge.node=${id}`], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter(Boolean);
}

async function startEngine(
  netManagerSocket = join(dataDir, 'no-net-manager.sock'),
): Promise<{ engine: NodeEngine; api: string }> {
  const options = parseOptions(
    optionSpecs,
    [
      '--cluster-manager',
      cmUrl,
      '--join-token',
      'join-1',
      '--name',
      'reg-node',
      '--data-dir',
      dataDir,
      '--port',
      '0',
      '--runtimes',
      'docker',
      '--labels',
      'zone=a',
      '--net-manager',
      netManagerSocket,
    ],
    {},
  );
  const engine = new NodeEngine(buildConfig(options), [], logger);
  engines.push(engine);
  const api = await engine.start();
  engineApis.push({ engine, api });
  return { engine, api };
}

describe('node engine registration, telemetry and restart', () => {
  beforeAll(async () => {
    broker = await Aedes.createBroker();
    brokerServer = createServer(broker.handle);
    await new Promise<void>((resolve) => brokerServer.listen(0, '127.0.0.1', resolve));
    mqttUrl = `mqtt://127.0.0.1:${(brokerServer.address() as { port: number }).port}`;

    http = createHttpServer();
    const io = new SocketServer(http);
    init = io.of('/init');
    init.use((socket, next) => {
      const auth = socket.handshake.auth as Record<string, unknown>;
      auths.push(auth);
      if (auth.token === 'join-1') return next();
      if (acceptIdentity && auth.nodeId === issuedId && auth.nodeSecret === 'secret-1') return next();
      next(new Error('unauthorized'));
    });
    init.on('connection', (socket) => {
      socket.on('register', (info: unknown, ack: (answer: unknown) => void) => {
        const parsed = NodeInfoSchema.parse(info);
        registrations.push(parsed);
        const answer = {
          nodeId: issuedId,
          nodeSecret: 'secret-1',
          mqtt: { url: mqttUrl, username: issuedId, password: 'pw' },
          telemetryIntervalMs: 300,
          ...(parsed.overlay ? { subnet: '10.30.0.0/26' } : {}),
        };
        setTimeout(() => ack(answer), nextAckDelayMs);
        nextAckDelayMs = 0;
      });
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    cmUrl = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    dataDir = await mkdtemp(join(tmpdir(), 'ne-reg-'));

    operator = await mqtt.connectAsync(mqttUrl, { protocolVersion: 4 });
    operator.on('message', (topic, payload) => {
      const text = payload.toString();
      if (topic.endsWith('/status')) retained.set(topic, text);
      if (topic.endsWith('/information')) telemetry.push(NodeTelemetrySchema.parse(JSON.parse(text)));
      if (topic.endsWith('/jobs/resources')) JobResourcesSchema.parse(JSON.parse(text));
      if (topic.endsWith('/job')) reports.push(JSON.parse(text));
    });
    await operator.subscribeAsync('nodes/#');
  });

  afterAll(async () => {
    for (const engine of engines) await engine.stop().catch(() => undefined);
    await operator?.endAsync();
    netManager?.close();
    for (const id of [nodeId, `${nodeId}-new`]) {
      for (const container of containerIds(id))
        execFileSync('docker', ['rm', '-f', container], { stdio: 'ignore' });
    }
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    brokerServer?.close();
    http?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('registers with the join token, stores its identity and sends telemetry with real numbers', async () => {
    const { engine, api } = await startEngine();
    await waitFor('a registration', () => registrations.length > 0);
    // With the secret it made for itself (on disk before it was sent): this fake cluster manager hands out its
    // own, as one from before node-made secrets does, and the node keeps what it was given.
    expect(auths[0]).toEqual({ token: 'join-1', nodeSecret: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) });
    expect(registrations[0]).toMatchObject({
      name: 'reg-node',
      runtimes: ['docker'],
      labels: { zone: 'a' },
      overlay: false,
    });
    expect(registrations[0]?.cpus).toBeGreaterThan(0);
    // Written once the answer is in: the registration above reached the server a moment before.
    const identity = await waitFor('the identity stored', async () => {
      const stored = JSON.parse(await readFile(join(dataDir, 'identity.json'), 'utf8'));
      return stored.nodeId ? stored : undefined;
    });
    expect(identity).toEqual({ nodeId, nodeSecret: 'secret-1' });

    const sample = await waitFor('telemetry', () => telemetry.find((t) => t.nodeId === nodeId));
    expect(sample.memory.totalBytes).toBeGreaterThan(0);
    expect(sample.disk.totalBytes).toBeGreaterThan(0);
    expect(sample.cpu.cores).toBeGreaterThan(0);
    await waitFor('retained online', () => retained.get(topics.status(nodeId)) === 'online');

    const info = await (await fetch(`${api}/info`)).json();
    expect(info).toMatchObject({
      nodeId,
      name: 'reg-node',
      registration: 'registered',
      mqttConnected: true,
      overlay: false,
    });

    operator.publish(
      topics.control(nodeId),
      JSON.stringify({
        id: 'reg-deploy-1',
        command: 'deploy',
        job: { id: 'job-reg', name: 'reg', image: 'edge/busybox:latest', command: ['sleep', '3600'] },
        instance: 0,
        generation: 1,
        cluster: [],
        worker: [nodeId],
        issuedAt: Date.now(),
      }),
      { qos: 1 },
    );
    await waitFor('running', () => reports.find((r) => r.job === 'job-reg' && r.status === 'running'));
    const containers = (await (await fetch(`${api}/containers`)).json()) as Array<{ status: string }>;
    expect(containers).toMatchObject([{ job: 'job-reg', instance: 0, status: 'running' }]);
    const metrics = await (await fetch(`${api}/metrics`)).text();
    expect(metrics).toMatch(/^edge_build_info\{version="[^"]+",nodejs="[^"]+"\} 1$/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(metrics).toMatch(/^process_cpu_seconds_total [\d.]+$/m);
    expect(metrics).toContain('edge_node_engine_instances{status="running"} 1');
    expect(metrics).toContain('edge_node_engine_instance_restarts{job="reg",instance="0"} 0');
    expect(metrics).toContain('edge_node_engine_runtime_up{runtime="docker"} 1');
    expect(metrics).toContain('edge_node_engine_mqtt_connected 1');
    await engine.stop();
    await waitFor('retained offline', () => retained.get(topics.status(nodeId)) === 'offline');
    expect(containerIds(nodeId)).toHaveLength(1);
  });

  it('comes back with its stored identity and adopts the container it runs', async () => {
    const before = containerIds(nodeId);
    auths.length = 0;
    reports.length = 0;
    await startEngine();
    await waitFor('a registration with the identity', () => auths.find((a) => a.nodeId === nodeId));
    expect(auths[0]).toEqual({ nodeId, nodeSecret: 'secret-1' });
    const running = await waitFor('running again', () =>
      reports.find((r) => r.job === 'job-reg' && r.status === 'running'),
    );
    expect(running.containerId).toBe(before[0]);
    expect(containerIds(nodeId)).toEqual(before);
  });

  it('keeps no Socket.IO connection once registered, and registers again when its MQTT link drops or is refused', async () => {
    const { api } = engineApis.at(-1)!;
    await waitFor('the registration connection closed', () => init.sockets.size === 0);
    const info = await (await fetch(`${api}/info`)).json();
    expect(info).toMatchObject({ registration: 'registered', mqttConnected: true });

    // The link drops and comes back (a cluster manager that restarted, maybe with other settings): it asks again.
    const before = registrations.length;
    dropBrokerClient(`node-${nodeId}`);
    await waitFor('a registration after the link came back', () => registrations.length > before);
    await waitFor('closed again', () => init.sockets.size === 0);

    // The broker refuses the login (the node was removed, its broker login with it): it asks at once.
    const refused = registrations.length;
    broker.authenticate = (_client, _username, _password, done) =>
      done(Object.assign(new Error('refused'), { returnCode: 5 }) as never, false);
    dropBrokerClient(`node-${nodeId}`);
    await waitFor('a registration after the refusal', () => registrations.length > refused);
    broker.authenticate = (_client, _username, _password, done) => done(null, true);
    await waitFor('the link back', async () => {
      const now = (await (await fetch(`${api}/info`)).json()) as { mqttConnected: boolean };
      return now.mqttConnected;
    });
    await waitFor('closed again', () => init.sockets.size === 0);
  });

  it('falls back to the join token when its identity is refused', async () => {
    await engines.at(-1)?.stop();
    acceptIdentity = false;
    issuedId = `${nodeId}-new`;
    auths.length = 0;
    await startEngine();
    await waitFor('the fallback to the token', () => auths.find((a) => a.token === 'join-1'));
    expect(auths[0]).toMatchObject({ nodeId });
    await waitFor('the new identity', async () => {
      const stored = JSON.parse(await readFile(join(dataDir, 'identity.json'), 'utf8'));
      return stored.nodeId === issuedId;
    });
    // The old id's workloads belong to a node the cluster manager forgot: they go.
    await waitFor('old containers removed', () => containerIds(nodeId).length === 0);
  });

  it('registers again for a subnet when a net manager came up while it registered without one', async () => {
    await engines.at(-1)?.stop();
    acceptIdentity = true;
    registrations.length = 0;
    // The start-up probe finds no net manager; it comes up while that registration is still unanswered.
    nextAckDelayMs = 4000;
    const socket = join(dataDir, 'net-manager.sock');
    const { api } = await startEngine(socket);
    const handovers: unknown[] = [];
    netManager = await startFakeNetManager(socket, handovers);
    await waitFor('a registration asking for a subnet', () => registrations.some((r) => r.overlay));
    expect(registrations[0]?.overlay).toBe(false);
    await waitFor(
      'the overlay on',
      async () => ((await (await fetch(`${api}/info`)).json()) as { overlay: boolean }).overlay,
    );
    expect(handovers[0]).toMatchObject({ nodeId: issuedId, subnet: '10.30.0.0/26' });
  });
});

/** A net manager's local API as an older one answers it (no `offload`), with a field this side does not know. */
async function startFakeNetManager(socket: string, handovers: unknown[]): Promise<HttpServer> {
  const status = {
    bootId: 'boot-1',
    nodeId: null,
    subnet: null,
    publicIp: null,
    udpPort: 51820,
    tun: 'edge-tun',
    mqttConnected: false,
    attachments: 0,
    counters: {},
    somethingNewer: true,
  };
  const server = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => {
      body += chunk.toString('utf8');
    });
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/v1/node') handovers.push(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status));
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return server;
}
