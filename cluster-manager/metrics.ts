import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/** The cluster manager's Prometheus metrics, on its own registry. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'edge_cm_' });
  return {
    registry,
    rejectedMessages: new Counter({
      name: 'edge_cm_rejected_messages_total',
      help: 'MQTT messages from nodes dropped because they did not parse',
      labelNames: ['topic_kind'],
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'edge_cm_http_requests_total',
      help: 'HTTP API requests by method and status',
      labelNames: ['method', 'status'],
      registers: [registry],
    }),
    nodes: new Gauge({
      name: 'edge_cm_nodes',
      help: 'registered nodes by status',
      labelNames: ['status'],
      registers: [registry],
    }),
    instances: new Gauge({
      name: 'edge_cm_instances',
      help: 'instances by status',
      labelNames: ['status'],
      registers: [registry],
    }),
    netTables: new Counter({
      name: 'edge_cm_net_tables_total',
      help: 'overlay route tables sent to net managers: answers to queries and pushes after changes',
      labelNames: ['kind', 'table'],
      registers: [registry],
    }),
    failoverPaused: new Gauge({
      name: 'edge_cm_failover_paused',
      help: '1 while a mass silence of nodes pauses failover (trouble on the control side)',
      registers: [registry],
    }),
    eventLoopStalled: new Gauge({
      name: 'edge_cm_event_loop_stalled_seconds',
      help: "time this process's event loop stood still since it started (not counted as node silence)",
      registers: [registry],
    }),
    controlLag: new Gauge({
      name: 'edge_cm_control_lag_seconds',
      help: "how far behind the control pipeline (broker, this process's client and event loop) runs; added to node timeouts",
      registers: [registry],
    }),
    evaluations: new Counter({
      name: 'edge_cm_evaluations_total',
      help: 'jobs the scheduler evaluated, by what triggered it (a job queued by several triggers counts under each)',
      labelNames: ['trigger'],
      registers: [registry],
    }),
    unackedCommands: new Gauge({
      name: 'edge_cm_unacked_commands',
      help: 'commands waiting for an ack',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
