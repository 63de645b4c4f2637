import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls } from 'node:tls';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { issueServerCertificate } from '../../cluster-manager/tls/certificates.js';
import { NodeRegistration, type Registered } from '../../node-engine/registration.js';
import {
  CLUSTER_CA_FILE,
  formatJoinToken,
  type NodeInfo,
  parseJoinToken,
  TrustError,
  trustClusterManager,
} from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * A worker trusts the cluster manager only through the CA its join token pins (then the CA it stored), tried
 * with the node engine's own registration against real cluster managers over TLS. Each refusal is checked on
 * both sides: the worker says why, and the cluster manager it was sent to learnt nothing.
 */
describe('TLS: a node engine trusts only the cluster CA its join token pins', () => {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  let cm: RunningClusterManager;
  /** Another cluster manager, with a CA of its own: what someone in between would answer with. */
  let impostor: RunningClusterManager;
  const dirs: string[] = [];
  const registrations: NodeRegistration[] = [];

  beforeAll(async () => {
    cm = await startClusterManager();
    impostor = await startClusterManager({ joinToken: parseJoinToken(cm.joinToken).secret });
  });
  afterAll(async () => {
    await cm.stop();
    await impostor.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    for (const registration of registrations.splice(0)) registration.stop();
    lines.length = 0;
  });

  async function register(url: string, joinToken: string | undefined, dataDir = newDir()) {
    const registered: Registered[] = [];
    const registration = new NodeRegistration({
      clusterManagerUrl: url,
      dataDir,
      joinToken,
      nodeInfo: () => ({ ...TestNode.info(`trust-${dirs.length}`), overlay: false }) as NodeInfo,
      onRegistered: (ack) => void registered.push(ack),
      logger,
    });
    registrations.push(registration);
    await registration.loadIdentity();
    registration.start();
    return { registration, registered, dataDir };
  }

  function newDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'edge-trust-'));
    dirs.push(dir);
    return dir;
  }

  it('pins the CA on first contact, stores it, and registers again with the stored CA and no token', async () => {
    expect(cm.joinToken).toMatch(/^E10[0-9a-f]{64}::/);
    const first = await register(cm.url, cm.joinToken);
    await waitFor(() => first.registered.length > 0, 'registered');
    expect(readFileSync(join(first.dataDir, CLUSTER_CA_FILE), 'utf8')).toBe(cm.ca);
    // The broker login comes with the CA that verifies it: the net manager gets it in the hand-over.
    expect(first.registered[0]!.mqtt).toMatchObject({ url: expect.stringMatching(/^mqtts:\/\//), ca: cm.ca });
    first.registration.stop();

    const again = await register(cm.url, undefined, first.dataDir);
    await waitFor(() => again.registered.length > 0, 'registered again');
    expect(again.registered[0]!.nodeId).toBe(first.registered[0]!.nodeId);
  });

  it('refuses a cluster manager whose CA is not the pinned one, and sends it nothing', async () => {
    const before = impostor.manager.store.nodes.count;
    // The right token (its secret would be accepted there), the wrong server: someone in between.
    const worker = await register(impostor.url, cm.joinToken);
    await waitFor(() => worker.registration.state === 'untrusted', 'untrusted');
    expect(lines.join('\n')).toMatch(/offers a CA that has SHA-256 [0-9a-f]{64}, but the join token pins/);
    expect(existsSync(join(worker.dataDir, CLUSTER_CA_FILE))).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 600)); // a retry included
    expect(impostor.manager.store.nodes.count).toBe(before);
    expect(worker.registered).toEqual([]);
  });

  it('refuses a server that is not from the stored CA, and registers nothing there', async () => {
    const first = await register(cm.url, cm.joinToken);
    await waitFor(() => first.registered.length > 0, 'registered');
    first.registration.stop();
    const before = impostor.manager.store.nodes.count;
    // The stored identity and CA, pointed at another cluster manager: the TLS handshake fails on the node.
    const moved = await register(impostor.url, undefined, first.dataDir);
    await waitFor(
      () => lines.some((line) => line.includes('not from the cluster CA this node trusts')),
      'the TLS refusal logged',
    );
    expect(moved.registered).toEqual([]);
    expect(impostor.manager.store.nodes.count).toBe(before);
  });

  it('refuses plain http when the token pins a CA, and a CA file that does not match the pin', async () => {
    const plain = cm.url.replace('https://', 'http://');
    await expect(
      trustClusterManager({ url: plain, joinToken: cm.joinToken, dataDir: newDir(), logger }),
    ).rejects.toThrow(TrustError);
    await expect(
      trustClusterManager({
        url: cm.url,
        joinToken: cm.joinToken,
        caFile: join(impostor.dataDir, 'tls', 'ca.pem'),
        logger,
      }),
    ).rejects.toThrow(/pins/);
    // A token without a pin falls back to the system CAs, which do not know the cluster CA either.
    const bare = formatJoinToken({ secret: parseJoinToken(cm.joinToken).secret });
    const unpinned = await register(cm.url, bare);
    await waitFor(
      () => lines.some((line) => line.includes('not from the cluster CA this node trusts')),
      'refused by the system CAs',
    );
    expect(unpinned.registered).toEqual([]);
  });

  it('answers a plain-text client on the HTTPS port with a 400 that says to use https, and Socket.IO fails', async () => {
    const plain = cm.url.replace('https://', 'http://');
    const response = await fetch(`${plain}/api/health`);
    expect(response.status).toBe(400);
    expect(await response.text()).toMatch(/This port speaks HTTPS: use https:\/\//);
    const node = new TestNode({ url: plain }, TestNode.info('plain-text'));
    await expect(node.register({ token: cm.joinToken })).rejects.toThrow();
    node.socket?.close();
    expect(cm.manager.store.nodes.findByName('plain-text')).toBeUndefined();
  });
});

describe('server certificate renewal while running', () => {
  it('swaps a renewed certificate into the running HTTPS port and broker, with the same CA', async () => {
    const cm = await startClusterManager();
    try {
      const presented = (port: number) =>
        new Promise<string>((resolve, reject) => {
          const socket = connectTls({ host: '127.0.0.1', port, ca: cm.ca }, () => {
            resolve(createHash('sha256').update(socket.getPeerCertificate().raw).digest('hex'));
            socket.end();
          });
          socket.on('error', reject);
        });
      const httpPort = Number(new URL(cm.url).port);
      const mqttPort = Number(new URL(cm.mqttUrl).port);
      const before = await presented(httpPort);
      expect(cm.manager.renewServerCertificate()).toBe(false); // nothing due
      // Another certificate on disk that is due (65 days left): the daily check replaces it and serves the new one.
      const ca = {
        cert: readFileSync(join(cm.dataDir, 'tls', 'ca.pem'), 'utf8'),
        key: readFileSync(join(cm.dataDir, 'tls', 'ca-key.pem'), 'utf8'),
      };
      const ageing = issueServerCertificate(ca, ['127.0.0.1'], new Date(Date.now() - 300 * 24 * 3600 * 1000));
      writeFileSync(join(cm.dataDir, 'tls', 'server.pem'), ageing.cert);
      writeFileSync(join(cm.dataDir, 'tls', 'server-key.pem'), ageing.key);
      expect(cm.manager.renewServerCertificate()).toBe(true);
      const onDisk = createHash('sha256')
        .update(new X509Certificate(readFileSync(join(cm.dataDir, 'tls', 'server.pem'))).raw)
        .digest('hex');
      expect(await presented(httpPort)).toBe(onDisk);
      await waitFor(
        async () => (await presented(mqttPort)) === onDisk,
        'the broker serving the new certificate',
      );
      expect(onDisk).not.toBe(before);
      // Nodes trust it as before: same CA.
      const node = await TestNode.join(cm, 'after-renewal');
      await node.close();
    } finally {
      await cm.stop();
    }
  });
});

describe('--insecure: plain text everywhere, said loudly', () => {
  it('serves HTTP, WS and MQTT in clear text with a bare join token, and warns at start', async () => {
    const logLines: string[] = [];
    const cm = await startClusterManager({ insecure: true, logLines });
    try {
      expect(cm.url).toMatch(/^http:\/\//);
      expect(cm.mqttUrl).toMatch(/^mqtt:\/\//);
      expect(cm.joinToken).not.toMatch(/^E10/);
      expect(logLines.join('\n')).toMatch(/TLS is OFF \(--insecure\)/);
      const node = await TestNode.join(cm, 'insecure-node');
      expect(node.ack!.mqtt.url).toMatch(/^mqtt:\/\//);
      expect(node.ack!.mqtt.ca).toBeUndefined();
      await node.close();
      expect((await cm.api('/api/cluster/ca')).status).toBe(404);
    } finally {
      await cm.stop();
    }
  });
});
