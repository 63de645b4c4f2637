import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/** The value of one series in Prometheus text, by its name and labels as printed; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/**
 * `/metrics` as Grafana users look for it (issue 14, item 6): process metrics under their standard names, the
 * build, per-node usage, GPUs and numeric sensors, restarts per instance, and histograms of command round trips
 * and placement time, from a node that speaks the protocol.
 */
describe('Prometheus metrics', () => {
  let cm: RunningClusterManager;
  let node: TestNode;

  beforeAll(async () => {
    cm = await startClusterManager();
    node = await TestNode.join(cm, 'metered-node');
  });

  afterAll(async () => {
    await node?.close();
    await cm?.stop();
  });

  it('serves the build, standard process metrics, per-node and per-instance gauges and the histograms', async () => {
    const nodeId = node.ack!.nodeId;
    await node.sendTelemetry([], {
      cpu: { percent: 33.5, cores: 4, load1: 0.3 },
      gpus: [
        {
          index: 0,
          vendor: 'NVIDIA',
          model: 'T4',
          memoryTotalMB: 15360,
          utilizationPercent: 40,
          temperatureC: 61,
        },
      ],
      sensors: [
        { id: 'temp1', type: 'temperature', value: 21.5, unit: 'C', ts: Date.now() },
        { id: 'door', type: 'contact', value: 'open', ts: Date.now() },
      ],
    });
    const created = (await (
      await cm.api('/api/jobs', { method: 'POST', json: { name: 'metered', image: 'edge/busybox:latest' } })
    ).json()) as { id: string; instances: { generation: number }[] };
    await waitFor(() => node.commands.find((command) => command.command === 'deploy'), 'the deploy');
    await node.publish(topics.jobStatus(nodeId), {
      job: created.id,
      instance: 0,
      generation: created.instances[0]!.generation,
      status: 'running',
      detail: '',
      containerId: 'c0ffee',
      restarts: 2,
      ts: Date.now(),
    });

    const text = await waitFor(async () => {
      const scraped = await (await cm.api('/metrics')).text();
      return (sample(scraped, 'edge_cm_command_round_trip_seconds_count{kind="deploy"}') ?? 0) >= 1 &&
        sample(scraped, 'edge_instance_restarts{job="metered",instance="0",node="metered-node"}') === 2 &&
        sample(scraped, 'edge_node_cpu_percent{node="metered-node"}') === 33.5
        ? scraped
        : undefined;
    }, 'the metrics of the deploy, its report and the telemetry');

    expect(text).toMatch(/^edge_build_info\{version="[^"]+",nodejs="[^"]+"\} 1$/m);
    expect(sample(text, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes \d+/m);
    expect(text).not.toContain('edge_cm_process_');
    expect(sample(text, 'edge_node_memory_percent{node="metered-node"}')).toBe(25);
    expect(sample(text, 'edge_node_disk_percent{node="metered-node"}')).toBe(50);
    expect(sample(text, 'edge_node_gpu_utilization_percent{node="metered-node",gpu="0"}')).toBe(40);
    expect(sample(text, 'edge_node_gpu_temperature_celsius{node="metered-node",gpu="0"}')).toBe(61);
    expect(sample(text, 'edge_node_sensor_value{node="metered-node",sensor="temp1",unit="C"}')).toBe(21.5);
    // A sensor whose value is no number has no series.
    expect(text).not.toContain('sensor="door"');
    expect(sample(text, 'edge_cm_placement_seconds_count')).toBeGreaterThanOrEqual(1);
  });

  it("keeps a short history of each node's CPU, memory and GPU for the dashboard's charts", async () => {
    const history = await waitFor(async () => {
      const body = (await (await cm.api('/api/nodes/metered-node/history')).json()) as {
        node: string;
        stepMs: number;
        points: { cpuPercent: number; memoryPercent: number; gpuPercent: number | null }[];
      };
      return body.points.some((point) => point.gpuPercent === 40) && body;
    }, 'a point with the GPU');
    expect(history).toMatchObject({ node: 'metered-node', stepMs: 15_000 });
    expect(history.points.at(-1)).toMatchObject({ cpuPercent: 33.5, memoryPercent: 25, gpuTemperatureC: 61 });
    expect((await cm.api('/api/nodes/no-such-node/history')).status).toBe(404);
  });
});
