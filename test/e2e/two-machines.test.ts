import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trustedFetch } from '../../shared/index.js';
import { containersWithLabel, fetchIn, pingIn, removeContainersWithLabel } from '../helpers/docker.js';
import { type TestHost, TestNetwork } from '../helpers/netns.js';
import { freePort } from '../helpers/ports.js';
import { baseEnv, machineArch, runScript, stopStartUp } from '../helpers/start-up.js';
import { waitFor } from '../helpers/wait.js';

const HTTPD = ['httpd', '-f', '-p', '80', '-h', '/www'];

interface NodeBody {
  id: string;
  name: string;
  status: string;
  overlayEndpoint?: { publicIp: string; udpPort: number; publicKey?: string };
}
interface JobBody {
  id: string;
  serviceIp?: string;
  instances: { status: string; nodeName: string | null; instanceIp?: string; namespaceIp?: string }[];
}

/**
 * The README's two-machine steps, as written: machine A runs `./start-up.sh <arch>` (an all-in-one cluster, in
 * the root namespace) with ADVERTISE_ADDRESS set to the address the other machine reaches it at, machine B (a
 * network namespace on a bridge) runs the join command A printed. Each has its own state and data dirs; both
 * use the one dockerd. Containers on each reach the other's by instance IP and service IP, both ways.
 */
describe("the README's two machines: an all-in-one cluster and a worker that joins it", () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-two-machines-'));
  const tag = `${process.pid}`;
  const nameA = `machine-a-${tag}`;
  const nameB = `machine-b-${tag}`;
  let network: TestNetwork | undefined;
  let hostB: TestHost;
  const envA: NodeJS.ProcessEnv = { ...baseEnv(join(dir, 'a')), START_UP_STATE_DIR: join(dir, 'a-state') };
  let envB: NodeJS.ProcessEnv = { ...baseEnv(join(dir, 'b')), START_UP_STATE_DIR: join(dir, 'b-state') };
  let baseUrl = '';
  let apiToken = '';
  let ca = '';

  const api = async <T>(path: string, init: { method?: string; json?: unknown } = {}) => {
    const response = await trustedFetch(ca)(`${baseUrl}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
      body: init.json === undefined ? undefined : JSON.stringify(init.json),
    });
    return { status: response.status, body: (await response.json()) as T };
  };

  beforeAll(async () => {
    network = TestNetwork.create();
    hostB = network.addHost(1);
  });

  afterAll(async () => {
    try {
      if (apiToken) {
        const jobs = (await api<{ id: string; name: string }[]>('/api/jobs').catch(() => undefined))?.body;
        for (const job of jobs ?? []) await api(`/api/jobs/${job.id}`, { method: 'DELETE' }).catch(() => 0);
      }
      stopStartUp(envB, envB.START_UP_STATE_DIR!, hostB.execPrefix);
      stopStartUp(envA, envA.START_UP_STATE_DIR!);
    } finally {
      for (const name of ['web-a', 'web-b']) removeContainersWithLabel(`edge.job.name=${name}-${tag}`);
      network?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('joins B with the command A printed, and the overlay works both ways', {
    timeout: 600_000,
  }, async () => {
    const [httpPort, mqttPort, enginePort] = [await freePort(), await freePort(), await freePort()];
    Object.assign(envA, {
      // Machine A reaches B over the test bridge, not its default route: the README's ADVERTISE_ADDRESS step.
      ADVERTISE_ADDRESS: network!.bridgeAddress,
      CM_HTTP_PORT: String(httpPort),
      CM_MQTT_PORT: String(mqttPort),
      NE_PORT: String(enginePort),
      CM_DATA_DIR: join(dir, 'a-cluster-manager'),
      NE_DATA_DIR: join(dir, 'a-node-engine'),
      NM_DATA_DIR: join(dir, 'a-net-manager'),
      NODE_NAME: nameA,
    });
    const startedA = runScript([machineArch(), '-y'], envA, 540_000);
    expect(startedA.status, startedA.output_).toBe(0);
    expect(startedA.stdout).toContain(
      `other workers send this machine's overlay traffic to ${network!.bridgeAddress}:50103`,
    );
    const join_ = /CLUSTER_MANAGER_URL=(\S+) JOIN_TOKEN=(\S+) \.\/start-up\.sh/.exec(startedA.stdout);
    expect(join_, startedA.stdout).not.toBeNull();
    const [, clusterManagerUrl, joinToken] = join_!;
    expect(clusterManagerUrl).toBe(`https://${network!.bridgeAddress}:${httpPort}`);
    expect(joinToken).toMatch(/^E10[0-9a-f]{64}::/);
    baseUrl = `https://127.0.0.1:${httpPort}`;
    apiToken = readFileSync(join(dir, 'a-cluster-manager', 'api-token'), 'utf8').trim();
    ca = readFileSync(join(dir, 'a-cluster-manager', 'tls', 'ca.pem'), 'utf8');

    // Machine B: the printed command, with its own state and data dirs and name.
    envB = {
      ...envB,
      CLUSTER_MANAGER_URL: clusterManagerUrl,
      JOIN_TOKEN: joinToken,
      NE_DATA_DIR: join(dir, 'b-node-engine'),
      NM_DATA_DIR: join(dir, 'b-net-manager'),
      NODE_NAME: nameB,
    };
    const startedB = runScript([machineArch(), '-y'], envB, 120_000, hostB.execPrefix);
    expect(startedB.status, startedB.output_).toBe(0);

    const nodes = await waitFor(
      async () => {
        const listed = (await api<NodeBody[]>('/api/nodes')).body;
        const both = [nameA, nameB].map((name) => listed.find((node) => node.name === name));
        return both.every((node) => node?.status === 'online' && node.overlayEndpoint) && both;
      },
      'both machines online with overlay endpoints',
      60_000,
      250,
    );
    // Neither announces loopback: A the address B reaches it at, B the one that routes to A.
    // Each with its overlay key (the overlay is encrypted), a different one.
    const key = expect.stringMatching(/^[A-Za-z0-9+/]{43}=$/);
    expect(nodes[0]!.overlayEndpoint).toEqual({
      publicIp: network!.bridgeAddress,
      udpPort: 50103,
      publicKey: key,
    });
    expect(nodes[1]!.overlayEndpoint).toEqual({ publicIp: hostB.address, udpPort: 50103, publicKey: key });
    expect(nodes[0]!.overlayEndpoint!.publicKey).not.toBe(nodes[1]!.overlayEndpoint!.publicKey);
    const events = (await api<{ type: string }[]>('/api/events?limit=1000')).body;
    expect(events.filter((event) => event.type === 'node.endpoint.refused')).toEqual([]);

    const webA = await runOn(`web-a-${tag}`, nameA);
    const webB = await runOn(`web-b-${tag}`, nameB);
    const containerA = containerOf(webA);
    const containerB = containerOf(webB);
    const ipA = webA.instances[0]!.instanceIp!;
    const ipB = webB.instances[0]!.instanceIp!;

    // A -> B and B -> A, by instance IP and by service IP, over ICMP and TCP.
    await waitFor(() => pingIn(containerA, ipB), 'A pinging B by instance IP', 20_000, 250);
    await waitFor(() => pingIn(containerB, ipA), 'B pinging A by instance IP', 20_000, 250);
    expect(fetchIn(containerA, ipB)).toContain('hello from edge/busybox');
    expect(fetchIn(containerB, ipA)).toContain('hello from edge/busybox');
    expect(fetchIn(containerA, webB.serviceIp!)).toContain('hello from edge/busybox');
    expect(fetchIn(containerB, webA.serviceIp!)).toContain('hello from edge/busybox');
  });

  async function runOn(name: string, nodeName: string): Promise<JobBody> {
    const created = await api<JobBody & { error?: string }>('/api/jobs', {
      method: 'POST',
      json: { name, image: 'edge/busybox:latest', command: HTTPD, constraints: { nodes: [nodeName] } },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return waitFor(
      async () => {
        const job = (await api<JobBody>(`/api/jobs/${created.body.id}`)).body;
        const instance = job.instances[0];
        return instance?.status === 'running' && Boolean(instance.namespaceIp) && job;
      },
      `${name} running on ${nodeName}`,
      60_000,
      250,
    );
  }
});

function containerOf(job: JobBody): string {
  const running = containersWithLabel(`edge.job=${job.id}`).filter((c) => c.state === 'running');
  expect(running).toHaveLength(1);
  return running[0]!.id;
}
