import { describe, expect, it } from 'vitest';
import {
  mayPublish,
  mayRetain,
  maySubscribe,
  mayUseClientId,
  nodeBrokerAcls,
} from '../../cluster-manager/broker/acl.js';

const node = { role: 'node', nodeId: 'n1' } as const;
const operator = { role: 'operator' } as const;
const manager = { role: 'cluster-manager' } as const;

describe('MQTT topic ACLs', () => {
  it('lets a node publish under its own nodes/<id>/ only, never to its own control topic', () => {
    expect(mayPublish(node, 'nodes/n1/information')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/control/ack')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/job')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/control')).toBe(false);
    expect(mayPublish(node, 'nodes/n2/information')).toBe(false);
    expect(mayPublish(node, 'nodes/n1')).toBe(false);
    expect(mayPublish(node, 'nodes/n10/information')).toBe(false);
    expect(mayPublish(node, 'other/topic')).toBe(false);
  });

  it('lets a node announce and query on its own net topics but never publish route tables', () => {
    expect(mayPublish(node, 'nodes/n1/net/announce')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/net/query')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/net/table')).toBe(false);
    expect(mayPublish(node, 'nodes/n1/net/table/x')).toBe(false);
    expect(mayPublish(node, 'nodes/n2/net/table')).toBe(false);
    expect(mayPublish(node, 'nodes/n2/net/query')).toBe(false);
    expect(maySubscribe(node, 'nodes/n1/net/table')).toBe(true);
    expect(maySubscribe(node, 'nodes/n2/net/table')).toBe(false);
    expect(maySubscribe(node, 'nodes/+/net/table')).toBe(false);
    expect(maySubscribe(node, 'nodes/+/net/#')).toBe(false);
    expect(maySubscribe(operator, 'nodes/+/net/table')).toBe(false);
    expect(mayPublish(manager, 'nodes/n1/net/table')).toBe(true);
  });

  it('lets a node take log requests on its own logs/control and answer on its logs/stream, never forge requests', () => {
    expect(maySubscribe(node, 'nodes/n1/logs/control')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/logs/stream')).toBe(true);
    expect(mayPublish(node, 'nodes/n1/logs/control')).toBe(false);
    expect(mayPublish(node, 'nodes/n2/logs/stream')).toBe(false);
    expect(maySubscribe(node, 'nodes/n2/logs/control')).toBe(false);
    expect(maySubscribe(node, 'nodes/+/logs/control')).toBe(false);
    expect(maySubscribe(node, 'nodes/n1/logs/stream')).toBe(false);
    expect(maySubscribe(node, 'nodes/n1/logs/#')).toBe(false);
    // Output may hold secrets: the operator login watches telemetry, not logs.
    expect(maySubscribe(operator, 'nodes/+/logs/stream')).toBe(false);
    expect(mayPublish(manager, 'nodes/n1/logs/control')).toBe(true);
    expect(nodeBrokerAcls('n1')).toEqual(
      expect.arrayContaining([
        { acltype: 'publishClientSend', topic: 'nodes/n1/logs/control', allow: false, priority: 10 },
        { acltype: 'subscribeLiteral', topic: 'nodes/n1/logs/control', allow: true, priority: 0 },
      ]),
    );
  });

  it('lets a node subscribe to its own control and net topics only', () => {
    expect(maySubscribe(node, 'nodes/n1/control')).toBe(true);
    expect(maySubscribe(node, 'nodes/n1/net/#')).toBe(true);
    expect(maySubscribe(node, 'nodes/n1/net/table/+')).toBe(true);
    expect(maySubscribe(node, 'nodes/n2/control')).toBe(false);
    expect(maySubscribe(node, 'nodes/+/control')).toBe(false);
    expect(maySubscribe(node, 'nodes/#')).toBe(false);
    expect(maySubscribe(node, '#')).toBe(false);
    expect(maySubscribe(node, 'nodes/n1/#')).toBe(false);
  });

  it('lets operators watch telemetry, status and job topics but publish nothing', () => {
    for (const filter of [
      'nodes/+/information',
      'nodes/+/jobs/resources',
      'nodes/n1/job',
      'nodes/+/status',
    ]) {
      expect(maySubscribe(operator, filter), filter).toBe(true);
    }
    for (const filter of [
      'nodes/+/control',
      'nodes/#',
      '#',
      'nodes/+/+',
      'nodes/n1/net/#',
      'nodes/+/control/ack',
    ]) {
      expect(maySubscribe(operator, filter), filter).toBe(false);
    }
    expect(mayPublish(operator, 'nodes/n1/information')).toBe(false);
  });

  it('lets the cluster manager do anything', () => {
    expect(mayPublish(manager, 'nodes/n1/control')).toBe(true);
    expect(maySubscribe(manager, 'nodes/#')).toBe(true);
  });

  it("lets a login use only its own client ids: a node its node- and net- ids, an operator none of the fleet's", () => {
    expect(mayUseClientId(node, 'node-n1')).toBe(true);
    expect(mayUseClientId(node, 'net-n1')).toBe(true);
    for (const foreign of [
      'node-n2',
      'net-n2',
      'node-n10',
      'node-n1x',
      'n1',
      '',
      'cluster-manager-abc',
      'operator-1',
    ])
      expect(mayUseClientId(node, foreign)).toBe(false);
    expect(mayUseClientId(operator, 'mosquitto_sub-1234')).toBe(true);
    for (const foreign of ['node-n1', 'net-n1', 'cluster-manager-abc'])
      expect(mayUseClientId(operator, foreign)).toBe(false);
    expect(mayUseClientId(manager, 'cluster-manager-abc')).toBe(true);
  });

  it('lets a node keep one retained message, its own status, and the operator none', () => {
    expect(mayRetain(node, 'nodes/n1/status')).toBe(true);
    for (const topic of ['nodes/n1/information', 'nodes/n1/status/x', 'nodes/n1/job', 'nodes/n2/status'])
      expect(mayRetain(node, topic)).toBe(false);
    expect(mayRetain(operator, 'nodes/n1/status')).toBe(false);
    expect(mayRetain(manager, 'nodes/n1/net/table')).toBe(true);
  });
});
