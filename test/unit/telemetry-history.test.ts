import { describe, expect, it } from 'vitest';
import {
  HISTORY_POINTS,
  HISTORY_STEP_MS,
  TelemetryHistory,
} from '../../cluster-manager/telemetry/telemetry-history.js';
import type { NodeTelemetry } from '../../shared/index.js';

const telemetry = (cpu: number, gpus: NodeTelemetry['gpus'] = []): NodeTelemetry =>
  ({
    nodeId: 'n1',
    ts: 0,
    cpu: { percent: cpu, cores: 4, load1: 0 },
    memory: { totalBytes: 100, usedBytes: 50, percent: 50 },
    disk: { totalBytes: 100, usedBytes: 10, percent: 10 },
    gpus,
    sensors: [],
    instances: [],
  }) as NodeTelemetry;

describe('telemetry history', () => {
  it('starts a point per step at most (later figures update the newest), oldest first, with the busiest and hottest GPU', () => {
    const history = new TelemetryHistory();
    history.record('n1', telemetry(10), 0);
    history.record('n1', telemetry(99), HISTORY_STEP_MS - 1);
    const gpu = (utilizationPercent: number | null, temperatureC: number | null) => ({
      index: 0,
      vendor: 'NVIDIA',
      model: 'T4',
      memoryTotalMB: 1,
      utilizationPercent,
      temperatureC,
    });
    history.record('n1', telemetry(20.25, [gpu(30, 55), gpu(70, null), gpu(null, 61)]), HISTORY_STEP_MS);
    expect(history.of('n1')).toEqual([
      { ts: 0, cpuPercent: 99, memoryPercent: 50, gpuPercent: null, gpuTemperatureC: null },
      { ts: HISTORY_STEP_MS, cpuPercent: 20.3, memoryPercent: 50, gpuPercent: 70, gpuTemperatureC: 61 },
    ]);
    expect(history.of('other')).toEqual([]);
  });

  it('holds HISTORY_POINTS at most, dropping the oldest, and forgets a node', () => {
    const history = new TelemetryHistory();
    for (let i = 0; i < HISTORY_POINTS + 5; i++) history.record('n1', telemetry(i), i * HISTORY_STEP_MS);
    const points = history.of('n1');
    expect(points).toHaveLength(HISTORY_POINTS);
    expect(points[0]!.cpuPercent).toBe(5);
    expect(points.at(-1)!.cpuPercent).toBe(HISTORY_POINTS + 4);
    history.forget('n1');
    expect(history.of('n1')).toEqual([]);
  });
});
