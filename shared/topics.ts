/** MQTT topic names of CONTRACT.md, in one place. */
export const topics = {
  information: (nodeId: string) => `nodes/${nodeId}/information`,
  jobResources: (nodeId: string) => `nodes/${nodeId}/jobs/resources`,
  jobStatus: (nodeId: string) => `nodes/${nodeId}/job`,
  control: (nodeId: string) => `nodes/${nodeId}/control`,
  controlAck: (nodeId: string) => `nodes/${nodeId}/control/ack`,
  status: (nodeId: string) => `nodes/${nodeId}/status`,
  net: (nodeId: string) => `nodes/${nodeId}/net`,
} as const;

/** Wildcard subscriptions the cluster manager makes. */
export const topicFilters = {
  information: 'nodes/+/information',
  jobResources: 'nodes/+/jobs/resources',
  jobStatus: 'nodes/+/job',
  controlAck: 'nodes/+/control/ack',
  status: 'nodes/+/status',
} as const;

export type TopicKind =
  | 'information'
  | 'jobResources'
  | 'jobStatus'
  | 'controlAck'
  | 'status'
  | 'control'
  | 'net';

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
  };
  const kind = kinds[rest] ?? (parts[2] === 'net' ? 'net' : undefined);
  return kind ? { nodeId, kind } : null;
}
