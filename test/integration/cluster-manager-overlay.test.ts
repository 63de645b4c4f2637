import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { type Command, type NetTable, NetTableSchema, type NodeView, topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { freePort } from '../helpers/ports.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface InstanceBody {
  number: number;
  nodeId: string | null;
  status: string;
  generation: number;
  instanceIp?: string;
  namespaceIp?: string;
}
interface JobBody {
  id: string;
  name: string;
  state: string;
  serviceIp?: string;
  instances: InstanceBody[];
}

const spec = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  image: 'edge/busybox:latest',
  command: ['sleep', '3600'],
  ...extra,
});

/** Plays a node's net manager: logs in with the node's MQTT login and records every route table it gets. */
class NetManager {
  readonly tables: NetTable[] = [];
  private constructor(
    readonly nodeId: string,
    readonly client: MqttClient,
  ) {}

  static async connect(node: TestNode): Promise<NetManager> {
    const ack = node.ack!;
    const client = mqtt.connect(ack.mqtt.url, {
      protocolVersion: 4,
      username: ack.mqtt.username || undefined,
      password: ack.mqtt.password || undefined,
      ca: ack.mqtt.ca,
      clientId: `net-${ack.nodeId}`,
      reconnectPeriod: 0,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    const manager = new NetManager(ack.nodeId, client);
    client.on('message', (_topic, payload) => {
      // Every table the cluster manager sends must pass the schema the net manager parses with.
      manager.tables.push(NetTableSchema.parse(JSON.parse(payload.toString())));
    });
    await client.subscribeAsync(topics.netTable(ack.nodeId), { qos: 1 });
    return manager;
  }

  announce(publicIp: string, udpPort: number) {
    return this.client.publishAsync(
      topics.netAnnounce(this.nodeId),
      JSON.stringify({ publicIp, udpPort, ts: Date.now() }),
      { qos: 1 },
    );
  }

  /** Asks about an address and waits for the answer to it. */
  async query(ip: string): Promise<NetTable> {
    const seen = this.tables.length;
    await this.client.publishAsync(topics.netQuery(this.nodeId), JSON.stringify({ ip, ts: Date.now() }), {
      qos: 1,
    });
    return waitFor(
      () => this.tables.slice(seen).find((table) => 'query' in table && table.query === ip),
      `the answer to a query for ${ip}`,
      5000,
      20,
    );
  }

  /** The next table after the first `after` that matches. */
  next(predicate: (table: NetTable) => boolean, what: string, after = 0): Promise<NetTable> {
    return waitFor(() => this.tables.slice(after).find(predicate), what, 5000, 20);
  }

  close() {
    return this.client.endAsync(true);
  }
}

const isPush = (table: NetTable) => !('query' in table && table.query !== undefined);

describe('the overlay on the cluster manager', () => {
  let cm: RunningClusterManager | undefined;
  let broker: Mosquitto | undefined;
  const nodes: TestNode[] = [];
  const netManagers: NetManager[] = [];

  afterEach(async () => {
    await Promise.all(netManagers.splice(0).map((n) => n.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm?.stop();
    await broker?.stop();
    cm = undefined;
    broker = undefined;
  });

  async function join(
    name: string,
    options: { overlay?: boolean; autoAck?: boolean; auth?: { nodeId: string; nodeSecret: string } } = {},
  ): Promise<TestNode> {
    const node = new TestNode(cm!, TestNode.info(name, { overlay: options.overlay ?? true }));
    nodes.push(node);
    await node.register(options.auth ?? { token: cm!.joinToken });
    await node.connectMqtt(options.autoAck ?? true);
    await node.sendTelemetry();
    return node;
  }

  async function netManagerOf(node: TestNode, publicIp?: string, udpPort = 50103): Promise<NetManager> {
    const manager = await NetManager.connect(node);
    netManagers.push(manager);
    if (publicIp) await manager.announce(publicIp, udpPort);
    return manager;
  }

  const api = async <T>(path: string, init?: Parameters<RunningClusterManager['api']>[1]) => {
    const response = await cm!.api(path, init);
    return { status: response.status, body: (await response.json()) as T };
  };
  const getJob = async (id: string) => (await api<JobBody>(`/api/jobs/${id}`)).body;
  const createJob = async (body: Record<string, unknown>) => {
    const { status, body: job } = await api<JobBody>('/api/jobs', { method: 'POST', json: body });
    expect(status, JSON.stringify(job)).toBe(201);
    return job;
  };
  const commandFor = (node: TestNode, kind: Command['command'], jobId: string, instance = 0) =>
    waitFor(
      () => node.commands.find((c) => c.command === kind && c.job.id === jobId && c.instance === instance),
      `${kind} of ${jobId}#${instance} on ${node.info.name}`,
      5000,
      20,
    );
  const report = (
    node: TestNode,
    jobId: string,
    instance: number,
    generation: number,
    extra: Record<string, unknown> = {},
  ) =>
    node.publish(topics.jobStatus(node.ack!.nodeId), {
      job: jobId,
      instance,
      generation,
      status: 'running',
      detail: '',
      containerId: `c-${instance}-${generation}`,
      ts: Date.now(),
      ...extra,
    });
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('gives a worker with a net manager the lowest free /26 and keeps it, also across a restart', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const b = await join('edge-b');
    const c = await join('edge-c', { overlay: false });
    expect(a.ack!.subnet).toBe('10.18.0.0/26');
    expect(b.ack!.subnet).toBe('10.18.0.64/26');
    expect(c.ack!.subnet).toBeUndefined();
    // Registering again without a net manager keeps the subnet: its net manager may just be restarting.
    const again = new TestNode(cm, TestNode.info('edge-a', { overlay: false }));
    nodes.push(again);
    expect(await again.register({ nodeId: a.ack!.nodeId, nodeSecret: a.ack!.nodeSecret })).toMatchObject({
      subnet: '10.18.0.0/26',
    });
    const listed = (await api<NodeView[]>('/api/nodes')).body;
    expect(Object.fromEntries(listed.map((node) => [node.name, node.subnet]))).toEqual({
      'edge-a': '10.18.0.0/26',
      'edge-b': '10.18.0.64/26',
      'edge-c': undefined,
    });

    const { dataDir } = cm;
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir });
    const b2 = new TestNode(cm, TestNode.info('edge-b', { overlay: true }));
    const c2 = new TestNode(cm, TestNode.info('edge-c', { overlay: true }));
    nodes.push(b2, c2);
    expect(await b2.register({ nodeId: b.ack!.nodeId, nodeSecret: b.ack!.nodeSecret })).toMatchObject({
      subnet: '10.18.0.64/26',
    });
    expect(await c2.register({ nodeId: c.ack!.nodeId, nodeSecret: c.ack!.nodeSecret })).toMatchObject({
      subnet: '10.18.0.128/26',
    });
  });

  it('gives a job a service IP and its instances their own IPs, sent with every command and kept through a move and a restart', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const b = await join('edge-b');
    const created = await createJob(spec('web', { replicas: 2 }));
    expect(created.serviceIp).toBe('10.30.0.1');
    expect(created.instances.map((i) => i.instanceIp)).toEqual(['10.30.0.2', '10.30.0.3']);
    const holderOf = (instance: InstanceBody) => (instance.nodeId === a.ack!.nodeId ? a : b);
    for (const instance of created.instances) {
      const deploy = await commandFor(holderOf(instance), 'deploy', created.id, instance.number);
      expect(deploy.network).toEqual({ instanceIp: instance.instanceIp, serviceIp: '10.30.0.1' });
    }

    const first = created.instances[0]!;
    const source = holderOf(first);
    const target = source === a ? b : a;
    await report(source, created.id, 0, first.generation, { namespaceIp: '10.18.0.2' });
    await waitFor(
      async () => (await getJob(created.id)).instances[0]?.namespaceIp === '10.18.0.2',
      'the namespace IP',
    );
    expect(
      (
        await api(`/api/jobs/${created.id}/move`, {
          method: 'POST',
          json: { instance: 0, to: target.info.name },
        })
      ).status,
    ).toBe(202);
    const move = await commandFor(target, 'move', created.id);
    expect(move.network).toEqual({ instanceIp: '10.30.0.2', serviceIp: '10.30.0.1' });
    await report(target, created.id, 0, move.generation, { namespaceIp: '10.18.0.70' });
    const moved = await waitFor(async () => {
      const instance = (await getJob(created.id)).instances[0]!;
      return instance.nodeId === target.ack!.nodeId && instance;
    }, 'the move done');
    expect(moved).toMatchObject({ instanceIp: '10.30.0.2', namespaceIp: '10.18.0.70', status: 'running' });

    const scaled = (
      await api<JobBody>(`/api/jobs/${created.id}/replicate`, { method: 'POST', json: { replicas: 3 } })
    ).body;
    const third = scaled.instances.find((i) => i.number === 2)!;
    expect(third.instanceIp).toBe('10.30.0.4');
    const deploy = await commandFor(holderOf(third), 'deploy', created.id, 2);
    expect(deploy.network).toEqual({ instanceIp: '10.30.0.4', serviceIp: '10.30.0.1' });

    const { dataDir } = cm;
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir });
    const after = await getJob(created.id);
    expect(after.serviceIp).toBe('10.30.0.1');
    expect(after.instances.map((i) => i.instanceIp)).toEqual(['10.30.0.2', '10.30.0.3', '10.30.0.4']);
    expect(after.instances[0]).toMatchObject({ nodeId: target.ack!.nodeId, namespaceIp: '10.18.0.70' });
  });

  it('answers table queries and pushes changes of the tables a node uses', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const b = await join('edge-b');
    await netManagerOf(a, '192.0.2.10', 50103);
    const netB = await netManagerOf(b, '192.0.2.11', 50104);
    await waitFor(async () => {
      const listed = (await api<NodeView[]>('/api/nodes')).body;
      return listed.find((node) => node.name === 'edge-a')?.overlayEndpoint?.udpPort === 50103;
    }, 'the endpoint of edge-a');

    const created = await createJob(spec('api', { constraints: { nodes: ['edge-a'] } }));
    const deploy = await commandFor(a, 'deploy', created.id);
    const table = {
      kind: 'job',
      jobId: created.id,
      jobName: 'api',
      serviceIp: '10.30.0.1',
      instances: [{ number: 0, instanceIp: '10.30.0.2' }],
    };
    expect(await netB.query('10.30.0.1')).toEqual({ ...table, query: '10.30.0.1', ts: expect.any(Number) });
    expect(await netB.query('10.30.0.2')).toEqual({ ...table, query: '10.30.0.2', ts: expect.any(Number) });
    expect(await netB.query('10.30.9.9')).toEqual({
      kind: 'missing',
      query: '10.30.9.9',
      ts: expect.any(Number),
    });

    let seen = netB.tables.length;
    await report(a, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.2' });
    const pushed = await netB.next(isPush, 'a push with the route', seen);
    expect(pushed).toEqual({
      ...table,
      instances: [
        {
          number: 0,
          instanceIp: '10.30.0.2',
          route: { nodeId: a.ack!.nodeId, namespaceIp: '10.18.0.2', publicIp: '192.0.2.10', udpPort: 50103 },
        },
      ],
      ts: expect.any(Number),
    });
    // The same report again, and telemetry that changes nothing for routing: nothing is pushed.
    seen = netB.tables.length;
    await report(a, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.2' });
    await a.sendTelemetry([
      { job: created.id, instance: 0, generation: deploy.generation, status: 'running' },
    ]);
    await sleep(300);
    expect(netB.tables.slice(seen)).toEqual([]);

    // A new endpoint of edge-a changes the route.
    await netManagers[0]!.announce('192.0.2.20', 50103);
    const moved = await netB.next(isPush, 'a push with the new endpoint', seen);
    expect(moved).toMatchObject({ instances: [{ route: { publicIp: '192.0.2.20' } }] });

    seen = netB.tables.length;
    expect((await api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    expect(await netB.next(isPush, 'the removed push', seen)).toEqual({
      kind: 'removed',
      jobId: created.id,
      ts: expect.any(Number),
    });
    await waitFor(async () => (await cm!.api(`/api/jobs/${created.id}`)).status === 404, 'the job gone');
    expect(await netB.query('10.30.0.1')).toMatchObject({ kind: 'missing' });
    const metrics = await (await cm.api('/metrics')).text();
    expect(metrics).toContain('edge_cm_net_tables_total{kind="answer",table="job"} 2');
    expect(metrics).toContain('edge_cm_net_tables_total{kind="push",table="removed"} 1');
  });

  it('pushes a failover: no route while the node is offline, then the replacement keeps the instance IP', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const b = await join('edge-b');
    const nets = [await netManagerOf(a, '192.0.2.10'), await netManagerOf(b, '192.0.2.11')];
    const created = await createJob(spec('cache', { constraints: { nodes: ['edge-a', 'edge-b'] } }));
    const holder = created.instances[0]!.nodeId === a.ack!.nodeId ? a : b;
    const other = holder === a ? b : a;
    const netOther = nets[holder === a ? 1 : 0]!;
    const deploy = await commandFor(holder, 'deploy', created.id);
    await netOther.query('10.30.0.2');
    await report(holder, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.2' });
    await netOther.next(
      (table) => table.kind === 'job' && table.instances[0]?.route !== undefined,
      'the route to the first holder',
    );

    let seen = netOther.tables.length;
    (holder.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
    holder.socket?.close();
    const lost = await netOther.next(isPush, 'a push without the route', seen);
    expect(lost).toMatchObject({ kind: 'job', instances: [{ number: 0, instanceIp: '10.30.0.2' }] });
    expect(lost.kind === 'job' && lost.instances[0]!.route).toBeUndefined();
    const replacement = await commandFor(other, 'deploy', created.id);
    expect(replacement.network).toEqual({ instanceIp: '10.30.0.2', serviceIp: '10.30.0.1' });
    const replaced = (await getJob(created.id)).instances[0]!;
    expect(replaced).toMatchObject({ nodeId: other.ack!.nodeId, instanceIp: '10.30.0.2' });
    expect(replaced.namespaceIp).toBeUndefined();
    seen = netOther.tables.length;
    await report(other, created.id, 0, replacement.generation, { namespaceIp: '10.18.0.66' });
    expect(await netOther.next(isPush, 'the route to the replacement', seen)).toMatchObject({
      instances: [{ route: { nodeId: other.ack!.nodeId, namespaceIp: '10.18.0.66' } }],
    });
  });

  it('pushes to the nodes that asked also after a restart of the cluster manager', async () => {
    const mqttPort = await freePort();
    cm = await startClusterManager({ mqttPort });
    const a = await join('edge-a');
    const b = await join('edge-b');
    await netManagerOf(a, '192.0.2.10');
    const netB = await netManagerOf(b, '192.0.2.11');
    const created = await createJob(spec('db', { constraints: { nodes: ['edge-a'] } }));
    const deploy = await commandFor(a, 'deploy', created.id);
    await netB.query('10.30.0.1');

    const { dataDir } = cm;
    await Promise.all(netManagers.splice(0).map((n) => n.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir, mqttPort });
    const a2 = await join('edge-a', { auth: { nodeId: a.ack!.nodeId, nodeSecret: a.ack!.nodeSecret } });
    const b2 = await join('edge-b', { auth: { nodeId: b.ack!.nodeId, nodeSecret: b.ack!.nodeSecret } });
    await netManagerOf(a2);
    const netB2 = await netManagerOf(b2);
    // A net manager announces on every connect and gets every table it uses again.
    await netB2.announce('192.0.2.11', 50103);
    expect(await netB2.next(isPush, 'the tables edge-b uses')).toMatchObject({
      kind: 'job',
      jobId: created.id,
      instances: [{ number: 0, instanceIp: '10.30.0.2' }],
    });
    const seen = netB2.tables.length;
    await report(a2, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.3' });
    expect(await netB2.next(isPush, 'a push after the restart', seen)).toMatchObject({
      instances: [{ route: { nodeId: a.ack!.nodeId, namespaceIp: '10.18.0.3', publicIp: '192.0.2.10' } }],
    });
  });

  it('tells a net manager that was away when a job it used went away, once it announces again', async () => {
    cm = await startClusterManager();
    await join('edge-a');
    const b = await join('edge-b');
    const away = await netManagerOf(b, '192.0.2.11');
    const gone = await createJob(spec('gone', { constraints: { nodes: ['edge-a'] } }));
    await away.query('10.30.0.1');
    // A clean session: what is published while it is away is lost.
    netManagers.splice(netManagers.indexOf(away), 1);
    await away.close();
    expect((await api(`/api/jobs/${gone.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(async () => (await cm!.api(`/api/jobs/${gone.id}`)).status === 404, 'the job gone');
    await waitFor(
      async () =>
        (await (await cm!.api('/metrics')).text()).includes(
          'edge_cm_net_tables_total{kind="push",table="removed"} 1',
        ),
      'the removed push nobody got',
    );
    // Its addresses go to the next job: the stale table would route them to the old one.
    const next = await createJob(spec('next', { constraints: { nodes: ['edge-a'] } }));
    expect(next.serviceIp).toBe('10.30.0.1');

    const back = await netManagerOf(b, '192.0.2.11');
    expect(await back.next(isPush, 'removed after the announce')).toEqual({
      kind: 'removed',
      jobId: gone.id,
      ts: expect.any(Number),
    });
    // Said once: the next announce sends nothing.
    await back.announce('192.0.2.11', 50103);
    await sleep(300);
    expect(back.tables).toHaveLength(1);
  });

  it('drops garbage on the net topics, counts it, and keeps answering', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const netA = await netManagerOf(a);
    const created = await createJob(spec('tough'));
    const deploy = await commandFor(a, 'deploy', created.id);
    const nodeId = a.ack!.nodeId;
    await netA.client.publishAsync(topics.netQuery(nodeId), 'not json', { qos: 1 });
    await netA.client.publishAsync(topics.netQuery(nodeId), JSON.stringify({ ip: '10.30.0.300', ts: 1 }), {
      qos: 1,
    });
    await netA.client.publishAsync(topics.netQuery(nodeId), JSON.stringify({ ip: { $gt: '' } }), { qos: 1 });
    await netA.client.publishAsync(
      topics.netAnnounce(nodeId),
      JSON.stringify({ publicIp: 'somewhere', udpPort: 70000, ts: 1 }),
      { qos: 1 },
    );
    await netA.client.publishAsync(topics.netAnnounce(nodeId), '\u0000\u0001', { qos: 1 });
    await report(a, created.id, 0, deploy.generation, { namespaceIp: '../../etc' });
    const metrics = await waitFor(async () => {
      const text = await (await cm!.api('/metrics')).text();
      return text.includes('edge_cm_rejected_messages_total{topic_kind="job"}') && text;
    }, 'rejections counted');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="net/query"} 3');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="net/announce"} 2');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="job"} 1');
    expect(netA.tables).toEqual([]);
    const node = (await api<NodeView>(`/api/nodes/${nodeId}`)).body;
    expect(node.overlayEndpoint).toBeUndefined();
    expect((await getJob(created.id)).instances[0]!.namespaceIp).toBeUndefined();
    expect(await netA.query('10.30.0.2')).toMatchObject({ kind: 'job', jobId: created.id });
    expect((await api('/api/health')).status).toBe(200);
  });

  it('refuses an endpoint no other worker can reach (loopback, unspecified), says what to set, keeps the one it had', async () => {
    const logLines: string[] = [];
    cm = await startClusterManager({ logLines });
    const a = await join('edge-a');
    const nodeId = a.ack!.nodeId;
    const endpointOf = async () => (await api<NodeView>(`/api/nodes/${nodeId}`)).body.overlayEndpoint;
    const refusals = async () =>
      (await api<{ type: string; message: string }[]>('/api/events?limit=100')).body.filter(
        (event) => event.type === 'node.endpoint.refused',
      );

    const netA = await netManagerOf(a, '127.0.0.1', 50103);
    const [refused] = await waitFor(async () => {
      const events = await refusals();
      return events.length > 0 && events;
    }, 'the loopback endpoint refused');
    expect(refused!.message).toContain('node edge-a announced overlay endpoint 127.0.0.1:50103');
    expect(refused!.message).toContain('loopback');
    expect(refused!.message).toContain('NM_PUBLIC_IP');
    expect(await endpointOf()).toBeUndefined();
    expect(logLines.some((line) => line.includes('127.0.0.1:50103') && line.includes('NM_PUBLIC_IP'))).toBe(
      true,
    );

    // No route to it either: a job running on the node gets no route in its table.
    const created = await createJob(spec('unroutable'));
    const deploy = await commandFor(a, 'deploy', created.id);
    await report(a, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.2' });
    await waitFor(
      async () => (await getJob(created.id)).instances[0]!.namespaceIp,
      'the namespace IP stored',
    );
    expect(await netA.query('10.30.0.2')).toMatchObject({ kind: 'job', instances: [{ number: 0 }] });
    expect((netA.tables.at(-1) as { instances: { route?: unknown }[] }).instances[0]!.route).toBeUndefined();

    // A reachable endpoint is taken; a loopback one after it changes nothing.
    await netA.announce('192.0.2.10', 50103);
    await waitFor(async () => (await endpointOf())?.publicIp === '192.0.2.10', 'the real endpoint stored');
    await netA.announce('127.0.0.1', 50103);
    await netA.announce('0.0.0.0', 50103);
    await waitFor(async () => (await refusals()).length === 3, 'both refusals recorded');
    expect((await refusals())[0]!.message).toContain('0.0.0.0:50103');
    expect(await endpointOf()).toEqual({ publicIp: '192.0.2.10', udpPort: 50103 });
    // The same refused endpoint again is not recorded twice.
    await netA.announce('0.0.0.0', 50103);
    await netA.announce('192.0.2.10', 50103);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await refusals()).toHaveLength(3);
  });

  it('lets a node read only its own tables and publish none', async () => {
    cm = await startClusterManager();
    const a = await join('edge-a');
    const b = await join('edge-b');
    const netA = await netManagerOf(a);
    const netB = await netManagerOf(b);
    await expect(netB.client.subscribeAsync(topics.netTable(a.ack!.nodeId), { qos: 1 })).rejects.toThrow();
    await expect(netB.client.subscribeAsync('nodes/+/net/table', { qos: 1 })).rejects.toThrow();
    // The broker drops a client that publishes where it may not: race the publish.
    await Promise.race([
      netA.client
        .publishAsync(
          topics.netTable(a.ack!.nodeId),
          JSON.stringify({ kind: 'missing', query: '10.30.0.1', ts: 1 }),
          {
            qos: 1,
          },
        )
        .catch(() => {}),
      sleep(500),
    ]);
    await sleep(200);
    expect(netA.tables).toEqual([]);
    expect(netB.tables).toEqual([]);
  });

  it('frees addresses once a delete is acked, and refuses a job the pool cannot hold with a 409', async () => {
    cm = await startClusterManager({ serviceSubnet: '10.30.0.0/29' });
    const a = await join('edge-a', { autoAck: false });
    const one = await createJob(spec('one', { replicas: 2 }));
    expect([one.serviceIp, ...one.instances.map((i) => i.instanceIp)]).toEqual([
      '10.30.0.1',
      '10.30.0.2',
      '10.30.0.3',
    ]);
    const refused = await api<{ error: { code: string; message: string } }>('/api/jobs', {
      method: 'POST',
      json: spec('two', { replicas: 3 }),
    });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({
      code: 'address_pool_exhausted',
      message: 'the service address pool 10.30.0.0/29 is exhausted: 4 wanted, 3 free of 6',
    });
    expect((await api<JobBody[]>('/api/jobs')).body.map((job) => job.name)).toEqual(['one']);
    const two = await createJob(spec('two', { replicas: 2 }));
    expect(two.serviceIp).toBe('10.30.0.4');
    const scale = await api<{ error: { code: string } }>(`/api/jobs/${two.id}/replicate`, {
      method: 'POST',
      json: { replicas: 3 },
    });
    expect(scale).toMatchObject({ status: 409, body: { error: { code: 'address_pool_exhausted' } } });
    expect((await getJob(two.id)).instances).toHaveLength(2);

    expect((await api(`/api/jobs/${one.id}`, { method: 'DELETE' })).status).toBe(202);
    // Deleting, not deleted: the node may still run it, so its addresses are still taken.
    expect((await api('/api/jobs', { method: 'POST', json: spec('three') })).status).toBe(409);
    const remove = await commandFor(a, 'delete', one.id, -1);
    await a.publish(topics.controlAck(a.ack!.nodeId), { id: remove.id, ok: true });
    await waitFor(async () => (await cm!.api(`/api/jobs/${one.id}`)).status === 404, 'job one gone');
    const three = await createJob(spec('three'));
    expect([three.serviceIp, three.instances[0]!.instanceIp]).toEqual(['10.30.0.1', '10.30.0.2']);
  });

  it('answers queries and pushes routes through an external mosquitto', async () => {
    broker = await Mosquitto.start();
    cm = await startClusterManager({ mqttUrl: broker.url });
    const a = await join('edge-a');
    const netA = await netManagerOf(a, '192.0.2.30', 50103);
    await waitFor(async () => {
      const listed = (await api<NodeView[]>('/api/nodes')).body;
      return listed[0]?.overlayEndpoint?.publicIp === '192.0.2.30';
    }, 'the endpoint announced through mosquitto');
    const created = await createJob(spec('via-mosquitto'));
    const deploy = await commandFor(a, 'deploy', created.id);
    expect(await netA.query('10.30.0.1')).toMatchObject({
      kind: 'job',
      jobId: created.id,
      query: '10.30.0.1',
    });
    const seen = netA.tables.length;
    await report(a, created.id, 0, deploy.generation, { namespaceIp: '10.18.0.2' });
    expect(await netA.next(isPush, 'the route pushed through mosquitto', seen)).toMatchObject({
      instances: [{ route: { nodeId: a.ack!.nodeId, namespaceIp: '10.18.0.2', publicIp: '192.0.2.30' } }],
    });
  });
});
