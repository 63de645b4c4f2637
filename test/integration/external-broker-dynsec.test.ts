import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeBrokerAcls } from '../../cluster-manager/broker/acl.js';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { DYNSEC_ADMIN, Mosquitto } from '../helpers/mosquitto.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * An external Debian mosquitto with its dynamic security plugin (`--mqtt-dynsec`): the cluster manager gives each
 * node its own login, bound to its client ids, with its own topics, as the embedded broker does. Refusals are
 * watched by a separate subscriber (the operator login), never by the refused client.
 */
describe('external mosquitto with per-node logins (dynamic security)', () => {
  let broker: Mosquitto;
  let cm: RunningClusterManager;
  let a: TestNode;
  let b: TestNode;
  let watcher: MqttClient;
  const seen: string[] = [];
  const clients: MqttClient[] = [];
  const login = (username: string, password: string, clientId: string) =>
    mqtt.connectAsync(broker.url, { protocolVersion: 4, username, password, clientId, reconnectPeriod: 0 });

  beforeAll(async () => {
    broker = await Mosquitto.start({ dynsec: true });
    cm = await startClusterManager({
      mqttUrl: broker.url,
      mqttUsername: DYNSEC_ADMIN.username,
      mqttPassword: DYNSEC_ADMIN.password,
      mqttDynsec: true,
    });
    a = await TestNode.join(cm, 'dyn-a');
    b = await TestNode.join(cm, 'dyn-b');
    watcher = await waitFor(
      () => login('operator', cm.telemetryToken, `watcher-${process.pid}`).catch(() => false as const),
      'the operator login on the broker',
    );
    watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`));
    await watcher.subscribeAsync(['nodes/+/status', 'nodes/+/information', 'nodes/+/job'], { qos: 1 });
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.endAsync(true)));
    await watcher?.endAsync(true);
    await Promise.all([a, b].map((node) => node?.close()));
    await cm?.stop();
    await broker?.stop();
  });

  it('hands each node a login of its own, and a net manager login of its own', () => {
    expect(a.ack!.mqtt).toMatchObject({
      url: broker.url,
      username: a.ack!.nodeId,
      password: a.ack!.nodeSecret,
    });
    expect(a.ack!.netMqtt).toMatchObject({ username: `net-${a.ack!.nodeId}`, password: a.ack!.nodeSecret });
  });

  it('delivers commands and reports through it', async () => {
    const job = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: {
          name: 'dyn-job',
          image: 'edge/busybox:latest',
          command: ['sleep', '1'],
          constraints: { nodes: ['dyn-a'] },
        },
      })
    ).json()) as { id: string };
    await waitFor(() => a.commands.some((command) => command.job.id === job.id), 'the deploy on dyn-a');
    expect(b.commands).toEqual([]);
  });

  it("refuses a node under another node's client id, and another node's password", async () => {
    const aId = a.ack!.nodeId;
    const bId = b.ack!.nodeId;
    await expect(login(aId, a.ack!.nodeSecret, `node-${bId}`)).rejects.toThrow(/Not authorized/i);
    await expect(login(bId, a.ack!.nodeSecret, `node-${bId}`)).rejects.toThrow(/Not authorized|Bad user/i);
    await expect(login('operator', cm.apiToken, 'someone')).rejects.toThrow(/Not authorized|Bad user/i);
    // b's session was never taken over: it still gets its commands.
    expect(b.mqtt!.connected).toBe(true);
  });

  it("drops a node's publish to another node's topics and its own control topic, seen by the watcher", async () => {
    const aId = a.ack!.nodeId;
    const bId = b.ack!.nodeId;
    const net = await login(`net-${aId}`, a.ack!.nodeSecret, `net-${aId}`);
    clients.push(net);
    await net.publishAsync(topics.status(bId), 'offline', { qos: 1 });
    await net.publishAsync(topics.information(bId), 'forged', { qos: 1 });
    await a.mqtt!.publishAsync(topics.control(aId), '{"forged":true}', { qos: 1 });
    // SUBACK 0x80: not allowed.
    await expect(net.subscribeAsync(topics.control(bId), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    // A marker through the broker from a itself: had anything above gone through, the watcher has it by then.
    await a.mqtt!.publishAsync(topics.information(aId), 'marker', { qos: 1 });
    await waitFor(() => seen.includes(`${topics.information(aId)} marker`), 'the marker');
    expect(seen.filter((line) => line.includes('forged') || line.endsWith(`${bId}/status offline`))).toEqual(
      [],
    );
    expect(cm.manager.store.nodes.get(bId)!.status).toBe('online');
  });

  it("carries log streams: a node takes its own log requests and answers them, never another's nor forged ones", async () => {
    const aId = a.ack!.nodeId;
    const bId = b.ack!.nodeId;
    const requests: string[] = [];
    a.mqtt!.on('message', (topic, payload) => {
      if (topic === topics.logsControl(aId)) requests.push(payload.toString());
    });
    await a.mqtt!.subscribeAsync(topics.logsControl(aId), { qos: 0 });
    await expect(a.mqtt!.subscribeAsync(topics.logsControl(bId), { qos: 0 })).rejects.toThrow(
      /Subscribe error/,
    );
    // Its own log control topic is the cluster manager's to publish on: a's forged request is dropped.
    await a.mqtt!.publishAsync(topics.logsControl(aId), '{"forged":true}', { qos: 1 });
    await a.sendTelemetry();
    const reading = cm.api('/api/jobs/dyn-job/instances/0/logs');
    const request = await waitFor(
      () => requests.map((text) => JSON.parse(text) as { type: string; requestId: string })[0],
      'the log request at the node',
    );
    expect(requests).toHaveLength(1);
    expect(request.type).toBe('open');
    const answer = (message: object) =>
      a.mqtt!.publishAsync(
        topics.logsStream(aId),
        JSON.stringify({ requestId: request.requestId, ...message }),
      );
    await answer({ type: 'opened', technology: 'docker' });
    await answer({ type: 'chunk', offset: 0, stream: 'stdout', data: 'through mosquitto\n' });
    await answer({ type: 'end', offset: 18, reason: 'eof' });
    const res = await reading;
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('through mosquitto\n');
  });

  it('keeps every node connected across a restart of the cluster manager: registering again drops nobody', async () => {
    let dropped = 0;
    b.mqtt!.on('close', () => dropped++);
    await cm.stop({ keepData: true });
    cm = await startClusterManager({
      dataDir: cm.dataDir,
      mqttUrl: broker.url,
      mqttUsername: DYNSEC_ADMIN.username,
      mqttPassword: DYNSEC_ADMIN.password,
      mqttDynsec: true,
    });
    // b registers again with its identity, as a node engine does when the cluster manager comes back.
    const again = new TestNode(cm, TestNode.info('dyn-b'));
    const ack = await waitFor(
      () =>
        again
          .register({ nodeId: b.ack!.nodeId, nodeSecret: b.ack!.nodeSecret })
          .then((answer) => ('nodeId' in answer ? answer : false)),
      'b registered again',
    );
    again.socket?.close();
    expect(ack.nodeId).toBe(b.ack!.nodeId);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(dropped).toBe(0);
    expect(b.mqtt!.connected).toBe(true);
  });

  it('gives a node role an older version made the topics of this version when the node registers again', async () => {
    const bId = b.ack!.nodeId;
    // The role as a version before log streams made it.
    const admin = await login(DYNSEC_ADMIN.username, DYNSEC_ADMIN.password, `admin-${process.pid}`);
    clients.push(admin);
    await admin.subscribeAsync('$CONTROL/dynamic-security/v1/response');
    const answered = new Promise((resolve) => admin.once('message', resolve));
    const older = nodeBrokerAcls(bId).filter((acl) => !acl.topic.includes('/logs/'));
    await admin.publishAsync(
      '$CONTROL/dynamic-security/v1',
      JSON.stringify({ commands: [{ command: 'modifyRole', rolename: `edge-node-${bId}`, acls: older }] }),
    );
    await answered;
    // The net manager's login has the node's role (the node engine's own connection is b's, left alone).
    const node = await login(`net-${bId}`, b.ack!.nodeSecret, `net-${bId}`);
    clients.push(node);
    await expect(node.subscribeAsync(topics.logsControl(bId), { qos: 0 })).rejects.toThrow(/Subscribe error/);

    await cm.stop({ keepData: true });
    cm = await startClusterManager({
      dataDir: cm.dataDir,
      mqttUrl: broker.url,
      mqttUsername: DYNSEC_ADMIN.username,
      mqttPassword: DYNSEC_ADMIN.password,
      mqttDynsec: true,
    });
    const again = new TestNode(cm, TestNode.info('dyn-b'));
    await waitFor(
      () =>
        again.register({ nodeId: bId, nodeSecret: b.ack!.nodeSecret }).then((answer) => 'nodeId' in answer),
      'b registered again',
    );
    again.socket?.close();
    await expect(node.subscribeAsync(topics.logsControl(bId), { qos: 0 })).resolves.toBeDefined();
  });

  it('deletes the logins of a removed node: it is dropped and cannot log in again', async () => {
    const aId = a.ack!.nodeId;
    expect((await cm.api(`/api/nodes/${aId}`, { method: 'DELETE' })).status).toBe(200);
    await waitFor(() => a.mqtt!.connected === false, 'the removed node dropped by the broker');
    await expect(login(aId, a.ack!.nodeSecret, `node-${aId}`)).rejects.toThrow(/Not authorized|Bad user/i);
    expect(b.mqtt!.connected).toBe(true);
  });
});
