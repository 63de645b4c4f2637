import { spawn } from 'node:child_process';
import { connect as connectTls } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttPrincipal } from '../../cluster-manager/broker/acl.js';
import { EmbeddedBroker } from '../../cluster-manager/broker/embedded-broker.js';
import {
  createCertificateAuthority,
  issueServerCertificate,
} from '../../cluster-manager/tls/certificates.js';
import { waitFor } from '../helpers/wait.js';

const SECRET = 'n1-secret';
/** The broker speaks MQTTS, as the cluster manager's does, with a certificate from a CA of this test's own. */
const CA = createCertificateAuthority('broker test CA');
const SERVER = issueServerCertificate(CA, ['127.0.0.1']);
const WRONG = 'wrong-password-never-logged';

function authenticate(username: string | undefined, password: string | undefined): MqttPrincipal | null {
  if (username === 'cluster-manager' && password === 'cm-secret') return { role: 'cluster-manager' };
  if (username === 'operator' && password === 'op-secret') return { role: 'operator' };
  if ((username === 'n1' || username === 'n2') && password === SECRET)
    return { role: 'node', nodeId: username };
  return null;
}

/**
 * Runs in a child process, so that it keeps going while the test's thread is blocked: a node publishes a
 * QoS 1 message every 50 ms for 3 s and a cluster-manager client receives them; prints the round trips.
 */
const PROBE = `
import mqtt from 'mqtt';
const url = process.argv[1];
const opts = { reconnectPeriod: 0, protocolVersion: 4, ca: process.argv[2] };
const manager = await mqtt.connectAsync(url, { ...opts, username: 'cluster-manager', password: 'cm-secret' });
const node = await mqtt.connectAsync(url, { ...opts, clientId: 'node-n1', username: 'n1', password: ${JSON.stringify(SECRET)} });
const latencies = [];
manager.on('message', (_topic, payload) => latencies.push(Date.now() - Number(payload.toString())));
await manager.subscribeAsync('nodes/n1/information', { qos: 1 });
console.log('ready');
let sent = 0;
const end = Date.now() + 3000;
while (Date.now() < end) {
  node.publish('nodes/n1/information', String(Date.now()), { qos: 1 });
  sent++;
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const deadline = Date.now() + 5000;
while (latencies.length < sent && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
console.log(JSON.stringify({ sent, received: latencies.length, maxLatencyMs: Math.max(...latencies) }));
await Promise.all([manager.endAsync(), node.endAsync()]);
`;

describe('the embedded broker in its own thread', () => {
  const logLines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
  let broker: EmbeddedBroker;
  const clients: MqttClient[] = [];

  function connect(username: string, password: string, reconnectPeriod = 0): Promise<MqttClient> {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(`mqtts://127.0.0.1:${broker.port}`, {
        ca: CA.cert,
        username,
        password,
        // A node's login may use only its own client id.
        ...(username.startsWith('n') ? { clientId: `node-${username}` } : {}),
        reconnectPeriod,
        protocolVersion: 4,
        connectTimeout: 5000,
      });
      clients.push(client);
      client.once('connect', () => resolve(client));
      client.once('error', (error) => {
        if (reconnectPeriod === 0) client.end(true);
        reject(error);
      });
    });
  }

  /** A node's session with its last will `offline` on its status topic. */
  const session = (clientId: string, username = 'n1') =>
    new Promise<MqttClient>((resolve, reject) => {
      const client = mqtt.connect(`mqtts://127.0.0.1:${broker.port}`, {
        ca: CA.cert,
        username,
        password: SECRET,
        clientId,
        reconnectPeriod: 0,
        protocolVersion: 4,
        will: { topic: `nodes/${username}/status`, payload: Buffer.from('offline'), qos: 1, retain: false },
      });
      clients.push(client);
      client.once('connect', () => resolve(client));
      client.once('error', reject);
    });

  beforeAll(async () => {
    broker = await EmbeddedBroker.start({ port: 0, host: '127.0.0.1', authenticate, tls: SERVER, logger });
  });

  afterAll(async () => {
    await Promise.all(clients.map((client) => client.endAsync(true)));
    const worker = broker.worker;
    await broker.close();
    expect(worker.threadId).toBe(-1);
  });

  it('listens on the port it picked', () => {
    expect(broker.port).toBeGreaterThan(0);
  });

  it('refuses a bad password with CONNACK code 4 and never logs the password', async () => {
    const error = await connect('n1', WRONG).then(
      () => undefined,
      (e: Error & { code?: number }) => e,
    );
    expect(error?.code).toBe(4);
    expect(error?.message).toMatch(/Bad username or password/);
    await waitFor(() => logLines.some((line) => line.includes('mqtt login refused')), 'the refusal logged');
    expect(logLines.join('\n')).not.toContain(WRONG);
  });

  it('delivers an allowed publish and refuses a foreign subscription with a failure code', async () => {
    const manager = await connect('cluster-manager', 'cm-secret');
    const node = await connect('n1', SECRET);
    const received: string[] = [];
    manager.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`));
    await manager.subscribeAsync('nodes/+/information', { qos: 1 });
    await node.publishAsync('nodes/n1/information', 'hello', { qos: 1 });
    await waitFor(() => received.includes('nodes/n1/information hello'), 'the node publish delivered');

    const granted = await node.subscribeAsync('nodes/n1/control', { qos: 1 });
    expect(granted[0]?.qos).toBe(1);
    const commands: string[] = [];
    node.on('message', (topic, payload) => commands.push(`${topic} ${payload.toString()}`));
    await manager.publishAsync('nodes/n1/control', 'deploy', { qos: 1 });
    await waitFor(() => commands.includes('nodes/n1/control deploy'), 'the control message delivered');

    // aedes answers a refused subscription with the SUBACK failure code 128, which mqtt.js rejects with.
    const refused = await node.subscribeAsync('nodes/n2/control', { qos: 1 }).then(
      () => undefined,
      (error: Error & { packet?: { granted?: unknown[] } }) => error,
    );
    expect(refused?.packet?.granted).toEqual([128]);
    expect(node.connected).toBe(true);
  });

  it('publishes no last will for a connection another of the same client id takes over, and one for a drop', async () => {
    const manager = await connect('cluster-manager', 'cm-secret');
    const wills: string[] = [];
    manager.on('message', (topic, payload) => wills.push(`${topic} ${payload.toString()}`));
    await manager.subscribeAsync('nodes/n1/status', { qos: 1 });
    const first = await session('node-n1');
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    // The same client id again (a node that timed out its CONNACK and connected anew): a takeover.
    const second = await session('node-n1');
    await closed;
    await second.publishAsync('nodes/n1/status', 'online', { qos: 1 });
    await waitFor(() => wills.includes('nodes/n1/status online'), 'the new session heard');
    expect(wills).toEqual(['nodes/n1/status online']);
    // A connection that drops (no DISCONNECT) still has its will published.
    (second as unknown as { stream: { destroy(): void } }).stream.destroy();
    await waitFor(() => wills.includes('nodes/n1/status offline'), 'the will of a dropped connection');
  });

  it("refuses a login under another's client id (CONNACK 2), and the owner keeps its session: no will fires", async () => {
    const watcher = await connect('cluster-manager', 'cm-secret');
    const seen: string[] = [];
    watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync('nodes/n2/status', { qos: 1 });
    const owner = await session('node-n2', 'n2');
    // A node (n1) and an operator each try n2's client id: both refused before any takeover.
    for (const [username, password] of [
      ['n1', SECRET],
      ['operator', 'op-secret'],
    ] as const) {
      const error = await new Promise<Error & { code?: number }>((resolve) => {
        const thief = mqtt.connect(`mqtts://127.0.0.1:${broker.port}`, {
          ca: CA.cert,
          username,
          password,
          clientId: 'node-n2',
          reconnectPeriod: 0,
          protocolVersion: 4,
        });
        thief.once('error', (e) => {
          thief.end(true);
          resolve(e);
        });
        thief.once('connect', () => resolve(new Error('connected')));
      });
      expect(error.code).toBe(2);
    }
    await owner.publishAsync('nodes/n2/status', 'still-here', { qos: 1 });
    await waitFor(() => seen.includes('nodes/n2/status still-here'), 'the owner still publishing');
    expect(owner.connected).toBe(true);
    expect(seen).toEqual(['nodes/n2/status still-here']);
    await waitFor(
      () => logLines.some((line) => line.includes('client id not its own')),
      'the refusal logged',
    );
  });

  it("refuses a node publishing to another node's status and the operator publishing anything, seen by a watcher", async () => {
    const watcher = await connect('cluster-manager', 'cm-secret');
    const seen: string[] = [];
    watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync(['nodes/n2/status', 'nodes/n2/control', 'nodes/n1/information'], { qos: 1 });
    const n1 = await connect('n1', SECRET);
    const operator = await connect('operator', 'op-secret');
    // Refused publishes are dropped (aedes may close the publisher too): only the watcher can tell.
    n1.publish('nodes/n2/status', 'offline', { qos: 1 });
    operator.publish('nodes/n2/control', '{"command":"deploy"}', { qos: 1 });
    operator.publish('nodes/n1/information', 'forged', { qos: 0 });
    // Then a marker through the broker: had any of them been let through, the watcher would have it by then.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await watcher.publishAsync('nodes/n1/information', 'marker', { qos: 1 });
    await waitFor(() => seen.includes('nodes/n1/information marker'), 'the marker');
    expect(seen).toEqual(['nodes/n1/information marker']);
  });

  it("keeps a node's retained status but no other retained message of it, though it delivers them", async () => {
    const n1 = await connect('n1', SECRET);
    const live = await connect('cluster-manager', 'cm-secret');
    const heard: string[] = [];
    live.on('message', (topic, payload) => heard.push(`${topic} ${payload.toString()}`));
    await live.subscribeAsync('nodes/n1/+', { qos: 1 });
    await n1.publishAsync('nodes/n1/job', 'kept-not', { qos: 1, retain: true });
    await n1.publishAsync('nodes/n1/status', 'online', { qos: 1, retain: true });
    await waitFor(() => heard.includes('nodes/n1/status online'), 'both delivered live');
    expect(heard).toContain('nodes/n1/job kept-not');
    // A subscriber that comes later gets what the broker kept: the status only.
    const later = await connect('cluster-manager', 'cm-secret');
    const retained: string[] = [];
    later.on('message', (topic, payload, packet) => {
      if (packet.retain) retained.push(`${topic} ${payload.toString()}`);
    });
    await later.subscribeAsync('nodes/n1/+', { qos: 1 });
    await waitFor(() => retained.length > 0, 'the retained status');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(retained).toEqual(['nodes/n1/status online']);
  });

  it('closes a connection whose first packet announces more than 256 KiB, before any login', async () => {
    const socket = connectTls({ port: broker.port, host: '127.0.0.1', ca: CA.cert });
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    const closed = new Promise((resolve) => socket.once('close', resolve));
    // CONNECT with a remaining length of 268,435,455 bytes, and a first slice of its body.
    socket.write(Buffer.concat([Buffer.from([0x10, 0xff, 0xff, 0xff, 0x7f]), Buffer.alloc(1024)]));
    await closed;
    await waitFor(() => logLines.some((line) => line.includes('mqtt packet over 262144 bytes')), 'logged');
    // The broker goes on serving everyone else.
    const node = await connect('n1', SECRET);
    expect(node.connected).toBe(true);
  });

  it('refuses a plain-text MQTT client on the MQTTS port, says so in the log, and serves TLS clients on', async () => {
    const plain = mqtt.connect(`mqtt://127.0.0.1:${broker.port}`, {
      username: 'operator',
      password: 'op-secret',
      reconnectPeriod: 0,
      protocolVersion: 4,
      connectTimeout: 5000,
    });
    clients.push(plain);
    const connected = await new Promise<boolean>((resolve) => {
      plain.once('connect', () => resolve(true));
      plain.once('close', () => resolve(false));
    });
    expect(connected).toBe(false);
    await waitFor(
      () => logLines.some((line) => line.includes('refused a plain-text MQTT client')),
      'the refusal logged',
    );
    // A client that trusts another CA is refused by its own side, and the broker serves the right one on.
    const stranger = mqtt.connect(`mqtts://127.0.0.1:${broker.port}`, {
      ca: createCertificateAuthority('another CA').cert,
      username: 'operator',
      password: 'op-secret',
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    clients.push(stranger);
    await expect(
      new Promise((resolve, reject) => {
        stranger.once('connect', resolve);
        stranger.once('error', reject);
      }),
    ).rejects.toThrow(/unable to verify|self[- ]signed/);
    expect((await connect('operator', 'op-secret')).connected).toBe(true);
  });

  it('keeps delivering while the main thread is blocked', async () => {
    const probe = spawn(
      process.execPath,
      ['--input-type=module', '-e', PROBE, `mqtts://127.0.0.1:${broker.port}`, CA.cert],
      {
        cwd: process.cwd(),
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let output = '';
    probe.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => probe.once('exit', resolve));
    await waitFor(() => output.includes('ready'), 'the probe connected', 20_000, 20);

    // The broker thread goes on; this one (and with it every login, which the main thread answers) stops.
    const blockedUntil = Date.now() + 2000;
    while (Date.now() < blockedUntil) {
      // busy
    }

    expect(await exited).toBe(0);
    const result = JSON.parse(output.trim().split('\n').at(-1)!) as {
      sent: number;
      received: number;
      maxLatencyMs: number;
    };
    expect(result.sent).toBeGreaterThan(10);
    expect(result.received).toBe(result.sent);
    // On the main thread's loop a message published at the block's start would wait the 2 s out.
    expect(result.maxLatencyMs).toBeLessThan(1000);
  });

  it('restarts a dead broker thread on the same port, and clients reconnect', async () => {
    const port = broker.port;
    const node = await connect('n1', SECRET, 200);
    let connects = 0;
    node.on('connect', () => connects++);
    const dead = broker.worker;
    await dead.terminate();

    await waitFor(() => broker.worker !== dead, 'a new broker thread', 20_000);
    expect(broker.port).toBe(port);
    const again = await waitFor(
      () => connect('n1', SECRET).catch(() => undefined),
      'a connection to the restarted broker',
      20_000,
      200,
    );
    expect(again.connected).toBe(true);
    await waitFor(() => connects > 0, 'the old client reconnected by itself', 20_000);
    expect(
      logLines.some((line) => line.includes('"level":60') && line.includes('mqtt broker thread exited')),
    ).toBe(true);
  });
});
