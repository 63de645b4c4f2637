import { memoryUsage, resourceUsage } from 'node:process';
import { VERSION } from '../shared/index.js';
import type { InstanceState } from './instance-status.js';

/** What the node engine's `GET /metrics` says, gathered by the node engine at each scrape. */
export interface NodeEngineMetrics {
  instances: InstanceState[];
  mqttConnected: boolean;
  /** Status reports waiting for the broker (one per instance at most). */
  unsentStatuses: number;
  /** Every configured runtime, and whether it answered its last probe. */
  runtimes: { technology: string; up: boolean }[];
  /** Log streams served now, those waiting for credit (a slow reader), and output read for them so far. */
  logStreams: { open: number; waitingForCredit: number; bytesRead: number };
}

const startedAt = Date.now() / 1000 - process.uptime();

/** A label value as Prometheus text writes it. */
function quote(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/**
 * Prometheus text for the node engine's local API, written by hand: prom-client would cost the node engine more
 * memory than all of this is worth. Process metrics carry their standard names (as prom-client's), so stock
 * dashboards find them.
 */
export function formatMetrics(metrics: NodeEngineMetrics): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const usage = resourceUsage();
  const memory = memoryUsage();
  const user = usage.userCPUTime / 1e6;
  const system = usage.systemCPUTime / 1e6;
  metric('edge_build_info', 'gauge', 'always 1: the version running, and its Node.js', [
    [`{version=${quote(VERSION)},nodejs=${quote(process.versions.node)}}`, 1],
  ]);
  metric('process_cpu_user_seconds_total', 'counter', 'user CPU time spent in seconds', [['', user]]);
  metric('process_cpu_system_seconds_total', 'counter', 'system CPU time spent in seconds', [['', system]]);
  metric('process_cpu_seconds_total', 'counter', 'user and system CPU time spent in seconds', [
    ['', user + system],
  ]);
  metric('process_resident_memory_bytes', 'gauge', 'resident memory size in bytes', [['', memory.rss]]);
  metric('process_start_time_seconds', 'gauge', 'start time of the process since the Unix epoch in seconds', [
    ['', Math.round(startedAt)],
  ]);
  metric('nodejs_heap_size_total_bytes', 'gauge', 'process heap size from Node.js in bytes', [
    ['', memory.heapTotal],
  ]);
  metric('nodejs_heap_size_used_bytes', 'gauge', 'process heap size used from Node.js in bytes', [
    ['', memory.heapUsed],
  ]);
  const byStatus = new Map<string, number>();
  for (const state of metrics.instances) byStatus.set(state.status, (byStatus.get(state.status) ?? 0) + 1);
  metric(
    'edge_node_engine_instances',
    'gauge',
    'instances on this node by status',
    [...byStatus].map(([status, count]) => [`{status=${quote(status)}}`, count]),
  );
  metric(
    'edge_node_engine_instances_backing_off',
    'gauge',
    'instances whose deploy or start is retried after a back-off',
    [['', metrics.instances.filter((state) => state.backOff !== undefined).length]],
  );
  metric(
    'edge_node_engine_instance_restarts',
    'gauge',
    'restarts of each instance on this node',
    metrics.instances.map((state) => [
      `{job=${quote(state.jobName)},instance=${quote(String(state.instance))}}`,
      state.restarts,
    ]),
  );
  metric(
    'edge_node_engine_runtime_up',
    'gauge',
    '1 when the runtime answered its last probe',
    metrics.runtimes.map(({ technology, up }) => [`{runtime=${quote(technology)}}`, up ? 1 : 0]),
  );
  metric('edge_node_engine_mqtt_connected', 'gauge', '1 while the link to the broker is up', [
    ['', metrics.mqttConnected ? 1 : 0],
  ]);
  metric('edge_node_engine_unsent_statuses', 'gauge', 'status reports waiting for the broker', [
    ['', metrics.unsentStatuses],
  ]);
  metric('edge_node_engine_log_streams', 'gauge', 'log streams this node serves now', [
    ['', metrics.logStreams.open],
  ]);
  metric(
    'edge_node_engine_log_streams_waiting_for_credit',
    'gauge',
    'log streams that sent what their credit allows and read nothing more until their reader takes it',
    [['', metrics.logStreams.waitingForCredit]],
  );
  metric('edge_node_engine_log_read_bytes_total', 'counter', 'workload output read for log streams', [
    ['', metrics.logStreams.bytesRead],
  ]);
  return `${lines.join('\n')}\n`;
}
