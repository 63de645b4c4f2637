import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { type NodeTelemetry, VERSION } from '../shared/index.js';

/**
 * The cluster manager's Prometheus metrics, on its own registry. Node.js's process metrics keep their standard
 * names (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`...), as stock dashboards expect them.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'edge_build_info',
    help: 'always 1: the version running, and its Node.js',
    labelNames: ['version', 'nodejs'],
    registers: [registry],
  }).set({ version: VERSION, nodejs: process.versions.node }, 1);
  const perNode = (name: string, help: string, more: string[] = []) =>
    new Gauge({ name, help, labelNames: ['node', ...more], registers: [registry] });
  return {
    registry,
    nodeCpu: perNode('edge_node_cpu_percent', 'CPU use of each online node, from its latest telemetry'),
    nodeMemory: perNode('edge_node_memory_percent', 'memory use of each online node'),
    nodeDisk: perNode('edge_node_disk_percent', "use of the disk of each online node's data dir"),
    nodeGpuUtilization: perNode('edge_node_gpu_utilization_percent', 'GPU use, per GPU of each online node', [
      'gpu',
    ]),
    nodeGpuTemperature: perNode('edge_node_gpu_temperature_celsius', 'GPU temperature, per GPU', ['gpu']),
    nodeSensor: perNode(
      'edge_node_sensor_value',
      'the latest value of each numeric sensor of each online node',
      ['sensor', 'unit'],
    ),
    instanceRestarts: new Gauge({
      name: 'edge_instance_restarts',
      help: 'restarts of each placed instance, as its node reports them',
      labelNames: ['job', 'instance', 'node'],
      registers: [registry],
    }),
    commandRoundTrip: new Histogram({
      name: 'edge_cm_command_round_trip_seconds',
      help: "from a command's creation to its node's ack (the node acks once it is on its disk)",
      labelNames: ['kind'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    placementSeconds: new Histogram({
      name: 'edge_cm_placement_seconds',
      help: "the scheduler's time to place the waiting instances of one job",
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers: [registry],
    }),
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
    streams: new Gauge({
      name: 'edge_cm_streams',
      help: 'clients following GET /api/stream now',
      registers: [registry],
    }),
    streamsCutOff: new Counter({
      name: 'edge_cm_streams_cut_off_total',
      help: 'streams ended because their client stopped reading (they resume with Last-Event-ID)',
      registers: [registry],
    }),
    unackedCommands: new Gauge({
      name: 'edge_cm_unacked_commands',
      help: 'commands waiting for an ack',
      registers: [registry],
    }),
    logStreams: new Gauge({
      name: 'edge_cm_log_streams',
      help: 'instance log streams relayed from nodes to HTTP readers now',
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * The per-node gauges (online nodes, from their latest telemetry) and per-instance restarts, set afresh at each
 * scrape: a node gone offline or an instance gone leaves no stale series behind.
 */
export function setFleetGauges(
  metrics: Metrics,
  nodes: { name: string; telemetry: NodeTelemetry | undefined }[],
  instances: { job: string; instance: number; node: string; restarts: number }[],
): void {
  const perNode = [
    metrics.nodeCpu,
    metrics.nodeMemory,
    metrics.nodeDisk,
    metrics.nodeGpuUtilization,
    metrics.nodeGpuTemperature,
    metrics.nodeSensor,
    metrics.instanceRestarts,
  ];
  for (const gauge of perNode) gauge.reset();
  for (const { name: node, telemetry } of nodes) {
    if (!telemetry) continue;
    metrics.nodeCpu.set({ node }, telemetry.cpu.percent);
    metrics.nodeMemory.set({ node }, telemetry.memory.percent);
    metrics.nodeDisk.set({ node }, telemetry.disk.percent);
    for (const gpu of telemetry.gpus) {
      const labels = { node, gpu: String(gpu.index) };
      if (typeof gpu.utilizationPercent === 'number')
        metrics.nodeGpuUtilization.set(labels, gpu.utilizationPercent);
      if (typeof gpu.temperatureC === 'number') metrics.nodeGpuTemperature.set(labels, gpu.temperatureC);
    }
    for (const reading of telemetry.sensors)
      if (typeof reading.value === 'number')
        metrics.nodeSensor.set({ node, sensor: reading.id, unit: reading.unit ?? '' }, reading.value);
  }
  for (const { job, instance, node, restarts } of instances)
    metrics.instanceRestarts.set({ job, instance: String(instance), node }, restarts);
}
