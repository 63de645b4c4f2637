/** Who an MQTT client is, once it logged in. */
export type MqttPrincipal =
  | { role: 'cluster-manager' }
  | { role: 'operator' }
  | { role: 'node'; nodeId: string };

/** What operators may watch: telemetry, status and job topics of every node, never control or net. */
const OPERATOR_FILTER = /^nodes\/(\+|[^/+#]+)\/(information|jobs\/resources|jobs\/\+|job|status)$/;

/**
 * A node publishes only under its own `nodes/<id>/`, never to its own control topic, nor to its own route
 * tables (`net/table`): those come from the cluster manager alone.
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
        topic !== table &&
        !topic.startsWith(`${table}/`) &&
        !/[+#]/.test(topic)
      );
    }
  }
}

/** A node subscribes only to its own control topic and its own net topics. */
export function maySubscribe(principal: MqttPrincipal, filter: string): boolean {
  switch (principal.role) {
    case 'cluster-manager':
      return true;
    case 'operator':
      return OPERATOR_FILTER.test(filter);
    case 'node': {
      const own = `nodes/${principal.nodeId}/`;
      if (filter === `${own}control`) return true;
      if (!filter.startsWith(`${own}net/`)) return false;
      // `nodes/<id>/net/#` and concrete net topics; `+` stays inside the node's own net tree.
      return !filter.slice(own.length).includes('#') || filter.endsWith('/#');
    }
  }
}
