import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import {
  ApiErrorBodySchema,
  backoffDelay,
  CommandAckSchema,
  CommandSchema,
  describeProblems,
  fieldProblems,
  formatPath,
  InstanceSchema,
  InstanceStatusReportSchema,
  JobDefinitionSchema,
  JobResourcesSchema,
  JobSpecSchema,
  NodeInfoSchema,
  NodeRegistrationAuthSchema,
  NodeTelemetrySchema,
  parseJson,
  parseNodeTopic,
  parseOptions,
  RegisterAckSchema,
  SensorsFileSchema,
  topics,
  UsageError,
} from '../../shared/index.js';

/** The field paths a schema complains about, as the API reports them. */
function problemPaths(schema: z.ZodType, value: unknown): string[] {
  const result = schema.safeParse(value);
  if (result.success) return [];
  return fieldProblems(result.error).map((problem) => problem.path);
}

const minimalJob = { name: 'hello', image: 'edge/busybox:latest' };

describe('JobSpecSchema', () => {
  it('fills in the defaults of CONTRACT.md', () => {
    expect(JobSpecSchema.parse(minimalJob)).toEqual({
      name: 'hello',
      image: 'edge/busybox:latest',
      technology: 'docker',
      env: {},
      ports: [],
      resources: { gpus: 0 },
      replicas: 1,
      restart: { policy: 'always', maxRetries: 5 },
      devices: [],
      disconnect: { replaceAfterMs: 0 },
      reschedule: { attempts: 3, intervalMs: 3_600_000, delayMs: 5000, maxDelayMs: 300_000 },
      constraints: {},
    });
  });

  it('accepts the full example of CONTRACT.md', () => {
    const spec = {
      name: 'hello',
      image: 'edge/busybox:latest',
      technology: 'docker',
      command: ['sleep', '3600'],
      env: { GREETING: 'hi' },
      ports: [{ container: 80, host: 8080, protocol: 'tcp' }],
      resources: { cpus: 0.5, memoryMB: 64, gpus: 0, pids: 128 },
      replicas: 1,
      restart: { policy: 'on-failure', maxRetries: 5 },
      devices: ['/dev/video0'],
      disconnect: { replaceAfterMs: 0 },
      reschedule: { attempts: 3, intervalMs: 3_600_000, delayMs: 5000, maxDelayMs: 300_000 },
      constraints: { nodes: ['worker-1'], arch: ['amd64'], labels: { zone: 'a' }, sensors: ['camera'] },
    };
    expect(JobSpecSchema.parse(spec)).toEqual(spec);
  });

  it('defaults a port protocol to tcp and the restart retries to 5', () => {
    const spec = JobSpecSchema.parse({
      ...minimalJob,
      ports: [{ container: 80 }],
      restart: { policy: 'never' },
    });
    expect(spec.ports).toEqual([{ container: 80, protocol: 'tcp' }]);
    expect(spec.restart).toEqual({ policy: 'never', maxRetries: 5 });
  });

  it.each(['Hello', '-hello', 'hello-', 'hel_lo', '', 'a'.repeat(64), 'héllo'])(
    'refuses the name %j',
    (name) => {
      expect(problemPaths(JobSpecSchema, { ...minimalJob, name })).toEqual(['name']);
    },
  );

  it.each(['a', 'a1', 'web-2', 'a'.repeat(63)])('accepts the name %j', (name) => {
    expect(JobSpecSchema.safeParse({ ...minimalJob, name }).success).toBe(true);
  });

  it('requires a name and an image', () => {
    expect(problemPaths(JobSpecSchema, {}).sort()).toEqual(['image', 'name']);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, image: '' })).toEqual(['image']);
  });

  it('takes 1 to 1000 whole replicas', () => {
    expect(problemPaths(JobSpecSchema, { ...minimalJob, replicas: 0 })).toEqual(['replicas']);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, replicas: 1001 })).toEqual(['replicas']);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, replicas: 1.5 })).toEqual(['replicas']);
    expect(JobSpecSchema.parse({ ...minimalJob, replicas: 1000 }).replicas).toBe(1000);
  });

  it('names the bad resource field', () => {
    expect(problemPaths(JobSpecSchema, { ...minimalJob, resources: { cpus: -1 } })).toEqual([
      'resources.cpus',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, resources: { cpus: 0 } })).toEqual([
      'resources.cpus',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, resources: { memoryMB: 1.5 } })).toEqual([
      'resources.memoryMB',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, resources: { gpus: -1 } })).toEqual([
      'resources.gpus',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, resources: { pids: 0 } })).toEqual([
      'resources.pids',
    ]);
  });

  it('wants an absolute path as the image of a native job', () => {
    const result = JobSpecSchema.safeParse({ ...minimalJob, technology: 'native', image: 'bin/server' });
    expect(result.success).toBe(false);
    expect(fieldProblems(result.error!)).toEqual([
      {
        path: 'image',
        message: 'for technology "native", image is the absolute path of an executable on the node',
      },
    ]);
    expect(
      JobSpecSchema.safeParse({ ...minimalJob, technology: 'native', image: '/bin/sleep' }).success,
    ).toBe(true);
  });

  it('refuses a host port used twice with the same protocol', () => {
    const ports = [
      { container: 80, host: 8080 },
      { container: 81, host: 8080, protocol: 'udp' },
      { container: 82, host: 8080 },
    ];
    const result = JobSpecSchema.safeParse({ ...minimalJob, ports });
    expect(fieldProblems(result.error!)).toEqual([
      { path: 'ports[2].host', message: 'host port tcp/8080 used twice' },
    ]);
  });

  it('refuses ports out of range and unknown protocols', () => {
    expect(problemPaths(JobSpecSchema, { ...minimalJob, ports: [{ container: 0 }] })).toEqual([
      'ports[0].container',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, ports: [{ container: 80, host: 65536 }] })).toEqual([
      'ports[0].host',
    ]);
    expect(
      problemPaths(JobSpecSchema, { ...minimalJob, ports: [{ container: 80, protocol: 'sctp' }] }),
    ).toEqual(['ports[0].protocol']);
  });

  it('refuses unknown fields, top-level and nested', () => {
    const top = JobSpecSchema.safeParse({ ...minimalJob, replica: 3 });
    expect(top.success).toBe(false);
    expect(describeProblems(top.error!)).toBe('replica: unknown field');
    const nested = JobSpecSchema.safeParse({ ...minimalJob, resources: { cpu: 1 } });
    expect(fieldProblems(nested.error!)).toEqual([{ path: 'resources.cpu', message: 'unknown field' }]);
  });

  it('checks env names, devices, restart policy and constraints', () => {
    expect(problemPaths(JobSpecSchema, { ...minimalJob, env: { 'BAD-NAME': 'x' } })).toEqual([
      'env.BAD-NAME',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, devices: ['/tmp/x'] })).toEqual(['devices[0]']);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, restart: { policy: 'sometimes' } })).toEqual([
      'restart.policy',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, constraints: { arch: ['x86'] } })).toEqual([
      'constraints.arch[0]',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, constraints: { sensors: [''] } })).toEqual([
      'constraints.sensors[0]',
    ]);
    expect(problemPaths(JobSpecSchema, { ...minimalJob, disconnect: { replaceAfterMs: -1 } })).toEqual([
      'disconnect.replaceAfterMs',
    ]);
  });

  it('refuses a body that is not an object', () => {
    expect(problemPaths(JobSpecSchema, 'hello')).toEqual(['(body)']);
    expect(problemPaths(JobSpecSchema, null)).toEqual(['(body)']);
  });
});

describe('JobDefinitionSchema and InstanceSchema', () => {
  it('is a job spec with an id', () => {
    expect(JobDefinitionSchema.parse({ id: 'j1', ...minimalJob })).toMatchObject({ id: 'j1', replicas: 1 });
    expect(problemPaths(JobDefinitionSchema, minimalJob)).toEqual(['id']);
  });

  it('reads an instance as the API shows it', () => {
    const instance = {
      number: 0,
      nodeId: null,
      status: 'pending',
      detail: 'no nodes registered',
      containerId: null,
      generation: 0,
      restarts: 0,
      version: 1,
      updatedAt: 1,
    };
    expect(InstanceSchema.parse(instance)).toEqual(instance);
    expect(problemPaths(InstanceSchema, { ...instance, version: 0 })).toEqual(['version']);
    expect(problemPaths(InstanceSchema, { ...instance, health: 'fine' })).toEqual(['health']);
    expect(problemPaths(InstanceSchema, { ...instance, status: 'sleeping' })).toEqual(['status']);
    expect(problemPaths(InstanceSchema, { ...instance, number: -1 })).toEqual(['number']);
  });
});

const nodeInfo = {
  name: 'edge-a',
  arch: 'arm64',
  os: 'Debian 12',
  cpus: 4,
  memoryBytes: 4 * 1024 ** 3,
  runtimes: ['docker'],
  version: '0.1.0',
};

describe('NodeInfoSchema and NodeRegistrationAuthSchema', () => {
  it('fills in the defaults', () => {
    expect(NodeInfoSchema.parse(nodeInfo)).toEqual({
      ...nodeInfo,
      gpus: [],
      sensors: [],
      labels: {},
      overlay: false,
    });
  });

  it('takes GPUs and sensors', () => {
    const info = {
      ...nodeInfo,
      gpus: [{ index: 0, vendor: 'NVIDIA', model: 'Jetson', memoryTotalMB: 8192 }],
      sensors: [{ id: 'cam0', type: 'camera', device: '/dev/video0', available: true }],
      labels: { zone: 'a' },
    };
    expect(NodeInfoSchema.parse(info)).toMatchObject(info);
  });

  it('names each bad field', () => {
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, arch: 'x86_64' })).toEqual(['arch']);
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, name: 'bad name' })).toEqual(['name']);
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, cpus: 0 })).toEqual(['cpus']);
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, memoryBytes: 1.5 })).toEqual(['memoryBytes']);
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, runtimes: ['podman'] })).toEqual(['runtimes[0]']);
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, gpus: [{ index: -1 }] })).toContain('gpus[0].index');
    expect(problemPaths(NodeInfoSchema, { ...nodeInfo, sensors: [{ id: 'x', type: 'y' }] })).toEqual([
      'sensors[0].available',
    ]);
  });

  it('authenticates with a join token or an id and secret, nothing else', () => {
    expect(NodeRegistrationAuthSchema.safeParse({ token: 't' }).success).toBe(true);
    expect(NodeRegistrationAuthSchema.safeParse({ nodeId: 'n', nodeSecret: 's' }).success).toBe(true);
    expect(NodeRegistrationAuthSchema.safeParse({ nodeId: 'n' }).success).toBe(false);
    expect(NodeRegistrationAuthSchema.safeParse({ token: '' }).success).toBe(false);
    expect(NodeRegistrationAuthSchema.safeParse({ token: 't', extra: 1 }).success).toBe(false);
    expect(NodeRegistrationAuthSchema.safeParse(undefined).success).toBe(false);
  });
});

describe('RegisterAckSchema and ApiErrorBodySchema', () => {
  const ok = {
    nodeId: 'n1',
    nodeSecret: 's',
    mqtt: { url: 'mqtt://127.0.0.1:10003', username: 'n1', password: 'p' },
    telemetryIntervalMs: 2000,
  };

  it('reads a successful ack, with or without a subnet', () => {
    expect(RegisterAckSchema.parse(ok)).toEqual(ok);
    expect(RegisterAckSchema.parse({ ...ok, subnet: '10.18.0.0/26' })).toMatchObject({
      subnet: '10.18.0.0/26',
    });
  });

  it('reads an error ack', () => {
    const error = { code: 'invalid', message: 'bad info', details: [{ path: 'arch', message: 'x' }] };
    expect(RegisterAckSchema.parse({ error })).toEqual({ error });
    expect(ApiErrorBodySchema.parse({ code: 'not_found', message: 'no job' })).toEqual({
      code: 'not_found',
      message: 'no job',
    });
  });

  it('refuses anything else', () => {
    expect(RegisterAckSchema.safeParse({ nodeId: 'n1' }).success).toBe(false);
    expect(RegisterAckSchema.safeParse({ ...ok, telemetryIntervalMs: 0 }).success).toBe(false);
    expect(RegisterAckSchema.safeParse({ error: { code: 'x' } }).success).toBe(false);
  });
});

const deployCommand = {
  id: '3f1c',
  command: 'deploy',
  job: { id: 'j1', ...minimalJob },
  instance: 0,
  generation: 1,
  cluster: ['c1'],
  worker: ['n1'],
  issuedAt: 1_700_000_000_000,
};

describe('CommandSchema and CommandAckSchema', () => {
  it('reads every command kind, filling in the job defaults', () => {
    for (const command of ['deploy', 'delete', 'move', 'replicate']) {
      const parsed = CommandSchema.parse({ ...deployCommand, command });
      expect(parsed.command).toBe(command);
      expect(parsed.job.restart.policy).toBe('always');
    }
  });

  it('takes instance -1 (every instance) but nothing lower', () => {
    expect(CommandSchema.safeParse({ ...deployCommand, command: 'delete', instance: -1 }).success).toBe(true);
    expect(problemPaths(CommandSchema, { ...deployCommand, instance: -2 })).toEqual(['instance']);
  });

  it('names each bad field', () => {
    expect(problemPaths(CommandSchema, { ...deployCommand, command: 'reboot' })).toEqual(['command']);
    expect(problemPaths(CommandSchema, { ...deployCommand, id: '' })).toEqual(['id']);
    expect(problemPaths(CommandSchema, { ...deployCommand, generation: -1 })).toEqual(['generation']);
    expect(
      problemPaths(CommandSchema, { ...deployCommand, job: { ...deployCommand.job, replicas: 0 } }),
    ).toEqual(['job.replicas']);
    expect(problemPaths(CommandSchema, { ...deployCommand, worker: 'n1' })).toEqual(['worker']);
  });

  it("clips a node's error code and message in an ack instead of storing them whole or losing the ack", () => {
    const long = CommandAckSchema.parse({
      id: 'c1',
      ok: false,
      error: { code: 'x'.repeat(500), message: 'y'.repeat(100_000) },
    });
    expect([long.error?.code.length, long.error?.message.length]).toEqual([64, 4096]);
    expect(long.error?.message.endsWith('…')).toBe(true);
  });

  it('reads acks with and without an error', () => {
    expect(CommandAckSchema.parse({ id: 'c1', ok: true })).toEqual({ id: 'c1', ok: true });
    const failed = { id: 'c1', ok: false, error: { code: 'invalid', message: 'no such image' } };
    expect(CommandAckSchema.parse(failed)).toEqual(failed);
    expect(problemPaths(CommandAckSchema, { ok: true })).toEqual(['id']);
    expect(problemPaths(CommandAckSchema, { id: 'c1', ok: 'yes' })).toEqual(['ok']);
    expect(problemPaths(CommandAckSchema, { id: 'c1', ok: false, error: { code: 'x' } })).toEqual([
      'error.message',
    ]);
  });
});

describe('InstanceStatusReportSchema', () => {
  const report = { job: 'j1', instance: 0, generation: 2, status: 'running', ts: 1 };

  it('fills in the defaults', () => {
    expect(InstanceStatusReportSchema.parse(report)).toEqual({
      ...report,
      detail: '',
      containerId: null,
      restarts: 0,
    });
  });

  it('keeps the optional facts', () => {
    const full = { ...report, status: 'exited', exitCode: 137, startedAt: 5, namespaceIp: '10.18.0.2' };
    expect(InstanceStatusReportSchema.parse(full)).toMatchObject(full);
  });

  it('names each bad field', () => {
    expect(problemPaths(InstanceStatusReportSchema, { ...report, status: 'dancing' })).toEqual(['status']);
    expect(problemPaths(InstanceStatusReportSchema, { ...report, instance: -1 })).toEqual(['instance']);
    expect(problemPaths(InstanceStatusReportSchema, { ...report, detail: 'x'.repeat(4097) })).toEqual([
      'detail',
    ]);
    expect(problemPaths(InstanceStatusReportSchema, { ...report, exitCode: 1.5 })).toEqual(['exitCode']);
  });
});

describe('NodeTelemetrySchema and JobResourcesSchema', () => {
  const telemetry = {
    nodeId: 'n1',
    ts: 1,
    cpu: { percent: 12.5, cores: 4, load1: 0.3 },
    memory: { totalBytes: 100, usedBytes: 50, percent: 50 },
    disk: { totalBytes: 100, usedBytes: 10, percent: 10 },
    gpus: [
      {
        index: 0,
        vendor: 'NVIDIA',
        model: 'T4',
        memoryTotalMB: 15360,
        memoryUsedMB: 0,
        utilizationPercent: 3,
        temperatureC: 40,
      },
    ],
    sensors: [
      { id: 't1', type: 'temperature', value: 41.5, unit: 'C', ts: 1 },
      { id: 'cam0', type: 'camera', value: null, ts: 1 },
    ],
    instances: [{ job: 'j1', instance: 0, generation: 1, status: 'running' }],
  };

  it('reads a telemetry message', () => {
    expect(NodeTelemetrySchema.parse(telemetry)).toEqual(telemetry);
  });

  it('refuses what a node could make the cluster manager keep without bound', () => {
    const long = 'x'.repeat(100_000);
    expect(
      problemPaths(NodeTelemetrySchema, {
        ...telemetry,
        sensors: [{ id: long, type: 't', value: long, ts: 1 }],
      }),
    ).toEqual(['sensors[0].id', 'sensors[0].value']);
    expect(
      problemPaths(NodeTelemetrySchema, {
        ...telemetry,
        sensors: Array.from({ length: 1001 }, () => telemetry.sensors[0]),
      }),
    ).toEqual(['sensors']);
    expect(problemPaths(NodeTelemetrySchema, { ...telemetry, nodeId: long })).toEqual(['nodeId']);
  });

  it('names each bad field', () => {
    expect(
      problemPaths(NodeTelemetrySchema, { ...telemetry, cpu: { ...telemetry.cpu, percent: -1 } }),
    ).toEqual(['cpu.percent']);
    expect(
      problemPaths(NodeTelemetrySchema, { ...telemetry, gpus: [{ ...telemetry.gpus[0], index: 'a' }] }),
    ).toEqual(['gpus[0].index']);
    expect(
      problemPaths(NodeTelemetrySchema, {
        ...telemetry,
        gpus: [{ ...telemetry.gpus[0], utilizationPercent: 101 }],
      }),
    ).toEqual(['gpus[0].utilizationPercent']);
    expect(
      problemPaths(NodeTelemetrySchema, {
        ...telemetry,
        sensors: [{ id: 'x', type: 'y', value: {}, ts: 1 }],
      }),
    ).toEqual(['sensors[0].value']);
    expect(
      problemPaths(NodeTelemetrySchema, { ...telemetry, instances: [{ job: 'j1' }] }).length,
    ).toBeGreaterThan(0);
    const { disk: _disk, ...withoutDisk } = telemetry;
    expect(problemPaths(NodeTelemetrySchema, withoutDisk)).toEqual(['disk']);
  });

  it('reads per-instance resource usage', () => {
    const usage = { ts: 1, instances: [{ job: 'j1', instance: 0, cpuPercent: 1.5, memoryBytes: 1024 }] };
    expect(JobResourcesSchema.parse(usage)).toEqual(usage);
    expect(JobResourcesSchema.parse({ ts: 1, instances: [] })).toEqual({ ts: 1, instances: [] });
    expect(
      problemPaths(JobResourcesSchema, { ts: 1, instances: [{ ...usage.instances[0], cpuPercent: -1 }] }),
    ).toEqual(['instances[0].cpuPercent']);
  });
});

describe('SensorsFileSchema', () => {
  it('reads the example file of CONTRACT.md', () => {
    const file = parseYaml(
      [
        '- id: cam0',
        '  type: camera',
        '  device: /dev/video0',
        '- id: t1',
        '  type: temperature',
        '  file: /sys/class/thermal/thermal_zone0/temp',
        '  scale: 0.001',
        '  unit: C',
      ].join('\n'),
    );
    expect(SensorsFileSchema.parse(file)).toEqual([
      { id: 'cam0', type: 'camera', device: '/dev/video0', scale: 1 },
      {
        id: 't1',
        type: 'temperature',
        file: '/sys/class/thermal/thermal_zone0/temp',
        scale: 0.001,
        unit: 'C',
      },
    ]);
  });

  it('names each bad field', () => {
    expect(problemPaths(SensorsFileSchema, [{ id: 'cam0', type: 'camera', device: 'video0' }])).toEqual([
      '[0].device',
    ]);
    expect(problemPaths(SensorsFileSchema, [{ id: 't1', type: 'temperature', file: 'temp' }])).toEqual([
      '[0].file',
    ]);
    expect(problemPaths(SensorsFileSchema, [{ type: 'camera' }])).toEqual(['[0].id']);
    expect(problemPaths(SensorsFileSchema, [{ id: 'x', type: 'y', colour: 'red' }])).toEqual(['[0].colour']);
    expect(problemPaths(SensorsFileSchema, { id: 'x', type: 'y' })).toEqual(['(body)']);
  });
});

describe('parseNodeTopic and topics', () => {
  it('reads every topic the cluster manager subscribes to', () => {
    expect(parseNodeTopic('nodes/n1/information')).toEqual({ nodeId: 'n1', kind: 'information' });
    expect(parseNodeTopic('nodes/n1/jobs/resources')).toEqual({ nodeId: 'n1', kind: 'jobResources' });
    expect(parseNodeTopic('nodes/n1/job')).toEqual({ nodeId: 'n1', kind: 'jobStatus' });
    expect(parseNodeTopic('nodes/n1/control')).toEqual({ nodeId: 'n1', kind: 'control' });
    expect(parseNodeTopic('nodes/n1/control/ack')).toEqual({ nodeId: 'n1', kind: 'controlAck' });
    expect(parseNodeTopic('nodes/n1/status')).toEqual({ nodeId: 'n1', kind: 'status' });
    expect(parseNodeTopic('nodes/n1/net/route/query')).toEqual({ nodeId: 'n1', kind: 'net' });
    expect(parseNodeTopic(topics.logsControl('n1'))).toEqual({ nodeId: 'n1', kind: 'logsControl' });
    expect(parseNodeTopic(topics.logsStream('n1'))).toEqual({ nodeId: 'n1', kind: 'logsStream' });
  });

  it('is the inverse of topics', () => {
    expect(parseNodeTopic(topics.controlAck('abc'))).toEqual({ nodeId: 'abc', kind: 'controlAck' });
    expect(parseNodeTopic(topics.jobResources('abc'))).toEqual({ nodeId: 'abc', kind: 'jobResources' });
  });

  it('returns null for any other topic', () => {
    for (const topic of [
      'nodes',
      'nodes/n1',
      'nodes//job',
      'other/n1/job',
      'nodes/n1/jobs',
      'nodes/n1/control/x',
    ]) {
      expect(parseNodeTopic(topic)).toBeNull();
    }
  });
});

describe('parseOptions', () => {
  const specs = {
    'http-port': { env: 'CM_HTTP_PORT', description: 'port', type: 'integer', default: 10100 },
    host: { env: 'CM_HOST', description: 'host', type: 'string', default: '0.0.0.0' },
    'mqtt-url': { env: 'CM_MQTT_URL', description: 'broker', type: 'string' },
    verbose: { env: 'VERBOSE', description: 'more logs', type: 'boolean', default: false },
  } as const;

  it('takes a flag over an env var over the default', () => {
    expect(parseOptions(specs, [], {})).toEqual({
      help: false,
      'http-port': 10100,
      host: '0.0.0.0',
      'mqtt-url': undefined,
      verbose: false,
    });
    expect(parseOptions(specs, [], { CM_HTTP_PORT: '2000' })['http-port']).toBe(2000);
    expect(parseOptions(specs, ['--http-port', '3000'], { CM_HTTP_PORT: '2000' })['http-port']).toBe(3000);
    expect(parseOptions(specs, ['--http-port=4000'], {})['http-port']).toBe(4000);
  });

  it('treats an empty env var as unset', () => {
    expect(parseOptions(specs, [], { CM_HOST: '' }).host).toBe('0.0.0.0');
  });

  it('reads booleans from flags and env vars', () => {
    expect(parseOptions(specs, ['--verbose'], {}).verbose).toBe(true);
    expect(parseOptions(specs, [], { VERBOSE: '1' }).verbose).toBe(true);
    expect(parseOptions(specs, [], { VERBOSE: 'no' }).verbose).toBe(false);
    expect(parseOptions(specs, ['--help'], {}).help).toBe(true);
  });

  it('throws a UsageError for a bad integer, from a flag or an env var', () => {
    expect(() => parseOptions(specs, ['--http-port', 'abc'], {})).toThrow(UsageError);
    expect(() => parseOptions(specs, ['--http-port', '-1'], {})).toThrow(UsageError);
    expect(() => parseOptions(specs, [], { CM_HTTP_PORT: '12.5' })).toThrow(
      '--http-port must be a whole number',
    );
  });

  it('throws a UsageError for an unknown flag or a stray argument', () => {
    expect(() => parseOptions(specs, ['--bogus'], {})).toThrow(UsageError);
    expect(() => parseOptions(specs, ['extra'], {})).toThrow(UsageError);
    expect(() => parseOptions(specs, ['--host'], {})).toThrow(UsageError);
  });
});

describe('field paths and JSON', () => {
  it('writes paths as a user does', () => {
    expect(formatPath(['resources', 'cpus'])).toBe('resources.cpus');
    expect(formatPath(['ports', 0, 'host'])).toBe('ports[0].host');
    expect(formatPath([0, 'device'])).toBe('[0].device');
    expect(formatPath([])).toBe('(body)');
  });

  it('describes every problem on one line', () => {
    const result = JobSpecSchema.safeParse({ name: 'Bad', image: 'x', replicas: 0 });
    expect(describeProblems(result.error!)).toMatch(/^name: .+; replicas: .+$/);
  });

  it('parses JSON or returns undefined', () => {
    expect(parseJson('{"a":1}')).toEqual({ a: 1 });
    expect(parseJson(Buffer.from('[1]'))).toEqual([1]);
    expect(parseJson('{not json')).toBeUndefined();
  });
});

describe('backoffDelay', () => {
  it('doubles up to the ceiling, with jitter in its upper half', () => {
    expect(backoffDelay(0, 100, 10_000, () => 0)).toBe(50);
    expect(backoffDelay(0, 100, 10_000, () => 1)).toBe(100);
    expect(backoffDelay(3, 100, 10_000, () => 1)).toBe(800);
    expect(backoffDelay(20, 100, 10_000, () => 1)).toBe(10_000);
    expect(backoffDelay(1000, 100, 10_000, () => 0.5)).toBe(7500);
  });
});
