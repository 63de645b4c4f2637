import { describe, expect, it } from 'vitest';
import { formatMetrics } from '../../node-engine/metrics.js';

describe('node engine metrics text', () => {
  it('writes Prometheus text with label values escaped, a HELP and TYPE for each metric', () => {
    const text = formatMetrics({
      instances: [
        {
          job: 'j1',
          jobName: 'we"b\\x',
          instance: 0,
          generation: 1,
          technology: 'docker',
          status: 'pulling',
          detail: '',
          containerId: null,
          restarts: 3,
          backOff: { failures: 2, retryInMs: 2000 },
        },
      ],
      mqttConnected: false,
      unsentStatuses: 4,
      runtimes: [
        { technology: 'docker', up: false },
        { technology: 'native', up: true },
      ],
      logStreams: { open: 2, waitingForCredit: 1, bytesRead: 4096 },
    });
    expect(text).toContain('edge_node_engine_instance_restarts{job="we\\"b\\\\x",instance="0"} 3');
    expect(text).toContain('edge_node_engine_instances{status="pulling"} 1');
    expect(text).toContain('edge_node_engine_instances_backing_off 1');
    expect(text).toContain('edge_node_engine_runtime_up{runtime="docker"} 0');
    expect(text).toContain('edge_node_engine_runtime_up{runtime="native"} 1');
    expect(text).toContain('edge_node_engine_unsent_statuses 4');
    expect(text).toContain('edge_node_engine_log_streams 2');
    expect(text).toContain('edge_node_engine_log_streams_waiting_for_credit 1');
    expect(text).toContain('edge_node_engine_log_read_bytes_total 4096');
    const names = [...text.matchAll(/^# TYPE (\S+) (gauge|counter)$/gm)].map((match) => match[1]);
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#')))
      expect(names).toContain(line.split(/[{ ]/)[0]);
    expect(text.endsWith('\n')).toBe(true);
  });
});
