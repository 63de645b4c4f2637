import mqtt from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface JobBody {
  id: string;
  state: string;
  instances: { number: number; nodeId: string | null; status: string; instanceIp: string | null }[];
}

/**
 * `DELETE /api/nodes/:id`: the node's instances are placed again elsewhere, what waited for its ack is done
 * with, its subnet is free, its secret opens nothing any more (not even with the join token), and it is cut
 * off. Watched from the outside: the other node's commands, a separate MQTT subscriber, the API.
 */
describe('removing a node', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];
  /** A node that made its own secret (as node engines do): `machine` tells two machines of one name apart. */
  const join = async (name: string, options: { autoAck?: boolean; machine?: string } = {}) => {
    const node = new TestNode(cm, TestNode.info(name, { overlay: true }));
    nodes.push(node);
    const nodeSecret = `${name}-${options.machine ?? 'first'}-secret-`.padEnd(40, 'x');
    const ack = await node.register({ token: cm.joinToken, nodeSecret });
    if (!('nodeId' in ack)) throw new Error(`registration refused: ${ack.error.message}`);
    await node.connectMqtt(options.autoAck ?? true);
    await node.sendTelemetry();
    return node;
  };

  beforeEach(async () => {
    cm = await startClusterManager();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((node) => node.close().catch(() => undefined)));
    await cm.stop();
  });

  it('places its instances again elsewhere, frees its subnet, and refuses it ever after', async () => {
    const a = await join('rm-a');
    const b = await join('rm-b');
    const aId = a.ack!.nodeId;
    const aSubnet = a.ack!.subnet;
    expect(aSubnet).toBeDefined();
    // A watcher, logged in as the operator: sees what the broker delivers and keeps, not what a client thinks.
    const watcher = await mqtt.connectAsync(cm.mqttUrl, {
      protocolVersion: 4,
      username: 'operator',
      password: cm.telemetryToken,
      ca: cm.ca,
      reconnectPeriod: 0,
    });
    const created = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'rm-job', image: 'edge/busybox:latest', command: ['sleep', '1'], replicas: 2 },
      })
    ).json()) as JobBody;
    const onA = created.instances.find((instance) => instance.nodeId === aId)!;
    expect(onA).toBeDefined();

    const removed = await cm.api(`/api/nodes/${aId}`, { method: 'DELETE' });
    expect(removed.status).toBe(200);
    expect(await removed.json()).toMatchObject({ id: aId, name: 'rm-a', placedAgain: 1 });

    // Its instance goes to b under the same number and instance IP.
    await waitFor(
      () => b.commands.some((command) => command.command === 'deploy' && command.instance === onA.number),
      'the instance sent to the other node',
    );
    const job = (await (await cm.api(`/api/jobs/${created.id}`)).json()) as JobBody;
    const moved = job.instances.find((instance) => instance.number === onA.number)!;
    expect(moved).toMatchObject({ nodeId: b.ack!.nodeId, instanceIp: onA.instanceIp });
    expect((await cm.api(`/api/nodes/${aId}`)).status).toBe(404);
    const events = (await (await cm.api('/api/events?type=node.removed')).json()) as { message: string }[];
    expect(events[0]!.message).toMatch(/node rm-a removed by an operator/);

    // Cut off: its MQTT session was closed, and its login no longer works.
    await waitFor(() => a.mqtt!.connected === false, 'the MQTT session closed');
    await expect(
      mqtt.connectAsync(cm.mqttUrl, {
        protocolVersion: 4,
        clientId: `node-${aId}`,
        username: aId,
        password: a.ack!.nodeSecret,
        ca: cm.ca,
        reconnectPeriod: 0,
      }),
    ).rejects.toThrow(/Bad username or password|Not authorized/i);
    // Its retained status is gone from the broker: a new subscriber gets nothing for it.
    const retained: string[] = [];
    watcher.on('message', (topic, payload, packet) => {
      if (packet.retain && payload.length > 0) retained.push(topic);
    });
    await watcher.subscribeAsync(topics.status(aId), { qos: 1 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(retained).toEqual([]);
    await watcher.endAsync(true);

    // Coming back: its identity is unknown, and its own secret with the join token is refused too.
    const comeback = new TestNode(cm, TestNode.info('rm-a', { overlay: true }));
    nodes.push(comeback);
    await expect(comeback.register({ nodeId: aId, nodeSecret: a.ack!.nodeSecret })).rejects.toThrow(
      'unauthorized',
    );
    const again = await comeback.register({ token: cm.joinToken, nodeSecret: a.ack!.nodeSecret });
    expect(again).toMatchObject({
      error: { code: 'forbidden', message: expect.stringContaining('removed') },
    });
    expect(cm.manager.store.nodes.findByName('rm-a')).toBeUndefined();

    // A new machine (a new secret) may take the name, and the freed subnet.
    const fresh = await join('rm-a', { machine: 'second' });
    expect(fresh.ack!.nodeId).not.toBe(aId);
    expect(fresh.ack!.subnet).toBe(aSubnet);
  });

  it('finishes a job in deleting that waited only for the removed node', async () => {
    // The node never acks: its delete stays unacked until the node is removed.
    const silent = await join('rm-silent', { autoAck: false });
    const created = (await (
      await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: 'rm-deleting', image: 'edge/busybox:latest', command: ['sleep', '1'] },
      })
    ).json()) as JobBody;
    expect((await cm.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    const waiting = (await (await cm.api(`/api/jobs/${created.id}`)).json()) as JobBody;
    expect(waiting.state).toBe('deleting');

    const edgectl = edgectlFor(cm);
    const removed = await edgectl(['node', 'remove', 'rm-silent']);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toMatch(/removed node rm-silent \(.+\): its secret is revoked/);
    expect((await cm.api(`/api/jobs/${created.id}`)).status).toBe(404);
    const deleted = (await (await cm.api('/api/events?type=job.deleted')).json()) as { message: string }[];
    expect(deleted.map((event) => event.message)).toContain('job rm-deleting deleted');
    expect(silent.ack).toBeDefined();
    // Unknown node: 404, nothing changes.
    expect((await cm.api('/api/nodes/no-such-node', { method: 'DELETE' })).status).toBe(404);
    const again = await edgectl(['node', 'remove', 'rm-silent']);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not found|no node/i);
  });
});
