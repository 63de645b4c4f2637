/** Who an MQTT client is, once it logged in. */
export type MqttPrincipal =
  | { role: 'cluster-manager' }
  | { role: 'operator' }
  | { role: 'node'; nodeId: string };

/**
 * Which MQTT client ids a login may use. A node uses its own two (`node-<id>` for the node engine, `net-<id>` for
 * the net manager); an operator none of the fleet's: a client id is how the broker finds the session to take
 * over (MQTT-3.1.4-2), so a foreign one would disconnect its owner (whose last will fires) and inherit its
 * queued commands. The cluster manager's own login uses its own id.
 */
export function mayUseClientId(principal: MqttPrincipal, clientId: string): boolean {
  switch (principal.role) {
    case 'cluster-manager':
      return true;
    case 'operator':
      return !/^(node-|net-|cluster-manager-)/.test(clientId);
    case 'node':
      return clientId === `node-${principal.nodeId}` || clientId === `net-${principal.nodeId}`;
  }
}

/** What operators may watch: telemetry, status and job topics of every node, never control or net. */
const OPERATOR_FILTER = /^nodes\/(\+|[^/+#]+)\/(information|jobs\/resources|jobs\/\+|job|status)$/;

/**
 * A node publishes only under its own `nodes/<id>/`, never to its own control topics (`control`,
 * `logs/control`), nor to its own route tables (`net/table`): those come from the cluster manager alone.
 */
export function mayPublish(principal: MqttPrincipal, topic: string): boolean {
  switch (principal.role) {
    case 'cluster-manager':
      return true;
    case 'operator':
      return false;
    case 'node': {
      const own = `nodes/${principal.nodeId}/`;
      const table = `${own}net/table`;
      return (
        topic.startsWith(own) &&
        topic !== `${own}control` &&
        topic !== `${own}logs/control` &&
        topic !== table &&
        !topic.startsWith(`${table}/`) &&
        !/[+#]/.test(topic)
      );
    }
  }
}

/**
 * Which topics a login may leave a retained message on. A node keeps exactly one: its `nodes/<id>/status`
 * (`online`, or its will's `offline`), so what the broker stores for a fleet is bounded by its size; anything
 * else a node marks retained is delivered but not kept.
 */
export function mayRetain(principal: MqttPrincipal, topic: string): boolean {
  switch (principal.role) {
    case 'cluster-manager':
      return true;
    case 'operator':
      return false;
    case 'node':
      return topic === `nodes/${principal.nodeId}/status`;
  }
}

/** A node subscribes only to its own control topics (`control`, `logs/control`) and its own net topics. */
export function maySubscribe(principal: MqttPrincipal, filter: string): boolean {
  switch (principal.role) {
    case 'cluster-manager':
      return true;
    case 'operator':
      return OPERATOR_FILTER.test(filter);
    case 'node': {
      const own = `nodes/${principal.nodeId}/`;
      if (filter === `${own}control` || filter === `${own}logs/control`) return true;
      if (!filter.startsWith(`${own}net/`)) return false;
      // `nodes/<id>/net/#` and concrete net topics; `+` stays inside the node's own net tree.
      return !filter.slice(own.length).includes('#') || filter.endsWith('/#');
    }
  }
}

/** A dynamic-security ACL of mosquitto (see dynsec.ts): the same rules, for an external broker. */
export interface BrokerAcl {
  acltype: 'publishClientSend' | 'subscribeLiteral' | 'subscribePattern';
  topic: string;
  allow: boolean;
  /** Higher is checked first. */
  priority: number;
}

/**
 * The rules above for one node, as an external mosquitto's dynamic security plugin takes them: it publishes under
 * its own `nodes/<id>/` but not to its `control`, `logs/control` nor its `net/table`, and subscribes to its
 * `control`, `logs/control` and its `net/#` only. (Retained messages cannot be limited there: a node may retain
 * on its own topics.)
 */
export function nodeBrokerAcls(nodeId: string): BrokerAcl[] {
  const own = `nodes/${nodeId}`;
  return [
    { acltype: 'publishClientSend', topic: `${own}/control`, allow: false, priority: 10 },
    { acltype: 'publishClientSend', topic: `${own}/logs/control`, allow: false, priority: 10 },
    { acltype: 'publishClientSend', topic: `${own}/net/table`, allow: false, priority: 10 },
    { acltype: 'publishClientSend', topic: `${own}/net/table/#`, allow: false, priority: 10 },
    { acltype: 'publishClientSend', topic: `${own}/#`, allow: true, priority: 0 },
    { acltype: 'subscribeLiteral', topic: `${own}/control`, allow: true, priority: 0 },
    { acltype: 'subscribeLiteral', topic: `${own}/logs/control`, allow: true, priority: 0 },
    { acltype: 'subscribePattern', topic: `${own}/net/#`, allow: true, priority: 0 },
  ];
}

/** What the operator login may watch on an external broker (OPERATOR_FILTER's topics); it publishes nothing. */
export const OPERATOR_BROKER_ACLS: BrokerAcl[] = [
  'nodes/+/information',
  'nodes/+/jobs/resources',
  'nodes/+/jobs/+',
  'nodes/+/job',
  'nodes/+/status',
].map((topic) => ({ acltype: 'subscribePattern', topic, allow: true, priority: 0 }));
