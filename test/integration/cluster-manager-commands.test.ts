import { spawn } from 'node:child_process';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  state: string;
  instances: { number: number; nodeId: string | null; status: string; generation: number; detail: string }[];
}

const job = { name: 'hello', image: 'edge/busybox:latest', command: ['sleep', '3600'] };

/** Deploy, run, delete: the whole command path through one broker. */
async function deployRunDelete(cm: RunningClusterManager, node: TestNode) {
  const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
  expect(created.instances[0]).toMatchObject({ status: 'scheduled', nodeId: node.ack!.nodeId });
  const deploy = await waitFor(
    () => node.commands.find((c) => c.command === 'deploy'),
    'the deploy command',
    5000,
  );
  expect(deploy).toMatchObject({
    job: { id: created.id, name: 'hello' },
    instance: 0,
    worker: [node.ack!.nodeId],
  });
  await node.publish(topics.jobStatus(node.ack!.nodeId), {
    job: created.id,
    instance: 0,
    generation: deploy.generation,
    status: 'running',
    detail: '',
    containerId: 'c0ffee',
    ts: Date.now(),
  });
  await waitFor(async () => {
    const body = (await (await cm.api(`/api/jobs/${created.id}`)).json()) as JobBody;
    return body.instances[0]?.status === 'running';
  }, 'instance running');
  expect((await cm.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
  const remove = await waitFor(
    () => node.commands.find((c) => c.command === 'delete'),
    'the delete command',
    5000,
  );
  expect(remove).toMatchObject({ instance: -1, job: { id: created.id } });
  await waitFor(
    async () => (await cm.api(`/api/jobs/${created.id}`)).status === 404,
    'job gone after the ack',
  );
}

describe('commands over MQTT', () => {
  let cm: RunningClusterManager | undefined;
  let broker: Mosquitto | undefined;
  const nodes: TestNode[] = [];

  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm?.stop();
    await broker?.stop();
    cm = undefined;
    broker = undefined;
  });

  it('deploys, reports and deletes through the embedded broker', async () => {
    cm = await startClusterManager();
    const node = await TestNode.join(cm, 'edge-a');
    nodes.push(node);
    await deployRunDelete(cm, node);
  });

  it('deploys, reports and deletes through an external mosquitto', async () => {
    broker = await Mosquitto.start();
    cm = await startClusterManager({ mqttUrl: broker.url });
    const node = await TestNode.join(cm, 'edge-m');
    nodes.push(node);
    expect(node.ack!.mqtt.url).toBe(broker.url);
    await deployRunDelete(cm, node);
  });

  it('re-sends a command until the node acks it, also after a restart of the cluster manager', async () => {
    cm = await startClusterManager();
    const silent = await TestNode.join(cm, 'edge-s', { autoAck: false });
    nodes.push(silent);
    await cm.api('/api/jobs', { method: 'POST', json: job });
    await waitFor(() => silent.commands.length >= 2, 'a second delivery of the unacked deploy', 8000);
    expect(new Set(silent.commands.map((c) => c.id)).size).toBe(1);
    const { dataDir } = cm;
    await silent.close();
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir });
    const back = new TestNode(cm, TestNode.info('edge-s'));
    nodes.push(back);
    await back.register({ nodeId: silent.ack!.nodeId, nodeSecret: silent.ack!.nodeSecret });
    await back.connectMqtt(true);
    await back.sendTelemetry();
    const again = await waitFor(() => back.commands[0], 'the deploy after the restart', 8000);
    expect(again.id).toBe(silent.commands[0]!.id);
  });

  it('marks a node offline on its MQTT last will and its instances lost', async () => {
    cm = await startClusterManager();
    const node = await TestNode.join(cm, 'edge-w');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: job })).json()) as JobBody;
    // Dropping the socket without DISCONNECT makes the broker publish the will.
    (node.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
    await waitFor(
      async () => {
        const nodesNow = (await (await cm!.api('/api/nodes')).json()) as { status: string }[];
        return nodesNow[0]?.status === 'offline';
      },
      'node offline',
      5000,
    );
    const body = (await (await cm.api(`/api/jobs/${created.id}`)).json()) as JobBody;
    expect(body.instances[0]?.status).toBe('lost');
    node.socket?.close();
  });

  it('drops malformed node messages and keeps serving', async () => {
    cm = await startClusterManager();
    const node = await TestNode.join(cm, 'edge-x');
    nodes.push(node);
    const nodeId = node.ack!.nodeId;
    await node.publish(topics.jobStatus(nodeId), 'not json');
    await node.publish(topics.controlAck(nodeId), { id: 5 });
    await node.publish(topics.information(nodeId), { nodeId, ts: 'yesterday' });
    await node.publish(topics.status(nodeId), 'maybe');
    const metrics = await waitFor(async () => {
      const text = await (await cm!.api('/metrics')).text();
      return text.includes('edge_cm_rejected_messages_total{topic_kind="information"}') && text;
    }, 'rejections counted');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="job"} 1');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="control/ack"} 1');
    expect(metrics).toContain('edge_cm_rejected_messages_total{topic_kind="status"} 1');
    expect((await cm.api('/api/health')).status).toBe(200);
  });
});

describe('embedded broker ACLs', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await cm.stop();
  });

  it('refuses anonymous clients and lets operators watch telemetry read-only', async () => {
    cm = await startClusterManager();
    const anonymous = mqtt.connect(cm.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0, ca: cm.ca });
    await expect(
      new Promise((resolve, reject) => {
        anonymous.once('connect', resolve);
        anonymous.once('error', reject);
      }),
    ).rejects.toThrow(/bad user name or password|Not authorized|Connection refused/i);
    anonymous.end(true);

    const node = await TestNode.join(cm, 'edge-t');
    nodes.push(node);
    const port = new URL(cm.mqttUrl).port;
    // An independent client: Debian's mosquitto_sub over TLS, verifying the cluster CA, logged in as the operator.
    const sub = spawn('mosquitto_sub', [
      ...['-h', '127.0.0.1', '-p', port, '--cafile', `${cm.dataDir}/tls/ca.pem`],
      ...['-u', 'operator', '-P', cm.telemetryToken, '-V', 'mqttv311'],
      ...['-t', 'nodes/+/information', '-C', '1', '-W', '10'],
    ]);
    let out = '';
    sub.stdout.on('data', (chunk) => {
      out += chunk;
    });
    const exited = new Promise<number | null>((resolve) => sub.once('exit', resolve));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await node.sendTelemetry();
    expect(await exited).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ nodeId: node.ack!.nodeId, cpu: { cores: 4 } });
  });

  it('lets a node publish only under its own topics and read only its own control topic', async () => {
    cm = await startClusterManager();
    const a = await TestNode.join(cm, 'edge-a');
    const b = await TestNode.join(cm, 'edge-b');
    nodes.push(a, b);
    await expect(a.mqtt!.subscribeAsync(topics.control(b.ack!.nodeId), { qos: 1 })).rejects.toThrow();
    await expect(a.mqtt!.subscribeAsync('nodes/#', { qos: 1 })).rejects.toThrow();
    // A forged deploy to b's control topic from a must never arrive.
    // The broker drops a client that publishes where it may not, so the publish never completes: race it.
    const attempt = (topic: string) =>
      Promise.race([
        a.mqtt!.publishAsync(topic, JSON.stringify({ id: 'forged' }), { qos: 1 }).catch(() => {}),
        new Promise((resolve) => setTimeout(resolve, 500)),
      ]);
    await attempt(topics.control(b.ack!.nodeId));
    await attempt(topics.control(a.ack!.nodeId));
    expect(b.commands).toEqual([]);
    expect(a.commands).toEqual([]);
  });
});
