/** MQTT topic names of CONTRACT.md, in one place. */
export const topics = {
  information: (nodeId: string) => `nodes/${nodeId}/information`,
  jobResources: (nodeId: string) => `nodes/${nodeId}/jobs/resources`,
  jobStatus: (nodeId: string) => `nodes/${nodeId}/job`,
  control: (nodeId: string) => `nodes/${nodeId}/control`,
  controlAck: (nodeId: string) => `nodes/${nodeId}/control/ack`,
  status: (nodeId: string) => `nodes/${nodeId}/status`,
  net: (nodeId: string) => `nodes/${nodeId}/net`,
  /** Net manager -> cluster manager: its overlay endpoint (public IP, UDP port), on every connect. */
  netAnnounce: (nodeId: string) => `nodes/${nodeId}/net/announce`,
  /** Net manager -> cluster manager: which job owns this overlay address? */
  netQuery: (nodeId: string) => `nodes/${nodeId}/net/query`,
  /** Cluster manager -> net manager: route tables, as answers and as pushes on change. */
  netTable: (nodeId: string) => `nodes/${nodeId}/net/table`,
  /** Cluster manager -> node: open a log stream, grant it credit (which keeps it alive), cancel it. */
  logsControl: (nodeId: string) => `nodes/${nodeId}/logs/control`,
  /** Node -> cluster manager: a log stream's chunks and its end. */
  logsStream: (nodeId: string) => `nodes/${nodeId}/logs/stream`,
} as const;

/**
 * Wildcard subscriptions the cluster manager makes. Not `nodes/+/jobs/resources`: per-instance usage is for
 * operators' dashboards, and telemetry already says a node is alive; at fleet size it would double what the
 * broker delivers to the cluster manager.
 */
export const topicFilters = {
  information: 'nodes/+/information',
  jobStatus: 'nodes/+/job',
  controlAck: 'nodes/+/control/ack',
  status: 'nodes/+/status',
  netAnnounce: 'nodes/+/net/announce',
  netQuery: 'nodes/+/net/query',
  logsStream: 'nodes/+/logs/stream',
} as const;

export type TopicKind =
  | 'information'
  | 'jobResources'
  | 'jobStatus'
  | 'controlAck'
  | 'status'
  | 'control'
  | 'netAnnounce'
  | 'netQuery'
  | 'netTable'
  | 'net'
  | 'logsControl'
  | 'logsStream';

/** Splits `nodes/<id>/<rest>` into the node id and what the topic is, or null for any other topic. */
export function parseNodeTopic(topic: string): { nodeId: string; kind: TopicKind } | null {
  const parts = topic.split('/');
  if (parts.length < 3 || parts[0] !== 'nodes' || !parts[1]) return null;
  const nodeId = parts[1];
  const rest = parts.slice(2).join('/');
  const kinds: Record<string, TopicKind> = {
    information: 'information',
    'jobs/resources': 'jobResources',
    job: 'jobStatus',
    control: 'control',
    'control/ack': 'controlAck',
    status: 'status',
    'net/announce': 'netAnnounce',
    'net/query': 'netQuery',
    'net/table': 'netTable',
    'logs/control': 'logsControl',
    'logs/stream': 'logsStream',
  };
  const kind = kinds[rest] ?? (parts[2] === 'net' ? 'net' : undefined);
  return kind ? { nodeId, kind } : null;
}
