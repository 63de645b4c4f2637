import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../node-engine/runtimes/docker.js';
import type { DeployPhase, InstanceSpec } from '../../node-engine/runtimes/runtime.js';
import { type JobDefinition, JobDefinitionSchema } from '../../shared/index.js';

const nodeId = `ne-docker-test-${process.pid}`;
const logger = pino({ level: 'silent' });
const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
const runtime = new DockerRuntime({ docker, nodeId, logger, stopTimeoutS: 1 });

function job(overrides: Record<string, unknown>): JobDefinition {
  return JobDefinitionSchema.parse({
    id: 'job-1',
    name: 'limits',
    image: 'edge/busybox:latest',
    command: ['sleep', '3600'],
    ...overrides,
  }) as JobDefinition;
}

function inspect(id: string): {
  Name: string;
  LogPath: string;
  Config: { Labels: Record<string, string>; Env: string[] };
  HostConfig: {
    NanoCpus: number;
    Memory: number;
    PidsLimit: number;
    RestartPolicy: { Name: string };
    LogConfig: { Type: string; Config: Record<string, string> };
  };
  State: { Running: boolean };
} {
  return JSON.parse(execFileSync('docker', ['inspect', id], { encoding: 'utf8' }))[0];
}

async function removeAll(): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`edge.node=${nodeId}`] } });
  await Promise.all(
    containers.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
}

describe('Docker runtime', () => {
  afterEach(removeAll);
  afterAll(removeAll);

  it('is up when the daemon answers, and down where no daemon listens', async () => {
    expect(await runtime.probe()).toBe('up');
    const nowhere = new DockerRuntime({
      docker: new Dockerode({ socketPath: '/nonexistent/docker.sock' }),
      nodeId: 'nowhere',
      logger: pino({ level: 'silent' }),
    });
    expect(await nowhere.probe()).toBe('down');
  });

  it('creates a container with the limits, labels and name asked, lists it and removes it', async () => {
    const spec: InstanceSpec = {
      nodeId,
      job: job({ env: { GREETING: 'hi' }, resources: { cpus: 0.5, memoryMB: 64, pids: 128 } }),
      instance: 2,
      generation: 3,
    };
    const phases: DeployPhase[] = [];
    const deployed = await runtime.deploy(spec, (phase) => phases.push(phase));
    expect(phases).toEqual(['creating']);
    const info = inspect(deployed.handle.id);
    expect(info.State.Running).toBe(true);
    expect(info.Name).toBe(`/edge-limits-2-${nodeId}-g3`);
    expect(info.HostConfig.NanoCpus).toBe(500_000_000);
    expect(info.HostConfig.Memory).toBe(67_108_864);
    expect(info.HostConfig.PidsLimit).toBe(128);
    expect(info.HostConfig.RestartPolicy.Name).toBe('no');
    expect(info.Config.Env).toContain('GREETING=hi');
    expect(info.Config.Labels).toMatchObject({
      'edge.node': nodeId,
      'edge.job': 'job-1',
      'edge.job.name': 'limits',
      'edge.instance': '2',
      'edge.generation': '3',
    });

    // Output bounded by the node's defaults; the job and its addresses in a label, to be taken back from.
    expect(info.HostConfig.LogConfig).toEqual({
      Type: 'json-file',
      Config: { 'max-size': '10m', 'max-file': '3' },
    });
    const listed = await runtime.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ jobId: 'job-1', instance: 2, generation: 3, state: 'running' });
    expect(listed[0]?.description?.job).toEqual(spec.job);
    expect(listed[0]?.startedAt).toBeGreaterThan(Date.now() - 60_000);

    await runtime.remove(deployed.handle);
    expect(await runtime.list()).toEqual([]);
    expect(() => execFileSync('docker', ['inspect', deployed.handle.id], { stdio: 'ignore' })).toThrow();
    await runtime.remove(deployed.handle);
  });

  it("keeps a container that prints without pause within its job's log limits", async () => {
    const spec: InstanceSpec = {
      nodeId,
      job: job({
        command: [
          'sh',
          '-c',
          'while :; do echo 0123456789012345678901234567890123456789012345678901234567; done',
        ],
        logs: { maxSizeMB: 1, maxFiles: 2 },
      }),
      instance: 0,
      generation: 1,
    };
    const deployed = await runtime.deploy(spec, () => undefined);
    const logPath = inspect(deployed.handle.id).LogPath;
    const sizes = () =>
      [logPath, `${logPath}.1`, `${logPath}.2`].map((path) => {
        try {
          return statSync(path).size;
        } catch {
          return -1;
        }
      });
    // Until it has rotated at least once: more than 1 MB written.
    const deadline = Date.now() + 20_000;
    while (sizes()[1] === -1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const [current, rotated, beyond] = sizes();
    await runtime.remove(deployed.handle);
    expect(rotated).toBeGreaterThan(0);
    expect(beyond).toBe(-1);
    expect(current! + rotated!).toBeLessThanOrEqual(2 * 1024 * 1024 + 64 * 1024);
  }, 30_000);

  it('reports an exited container with its exit code, and starts it again', async () => {
    const spec: InstanceSpec = {
      nodeId,
      job: job({ command: ['sh', '-c', 'echo bye; exit 3'] }),
      instance: 0,
      generation: 1,
    };
    const deployed = await runtime.deploy(spec, () => undefined);
    const deadline = Date.now() + 10_000;
    let state = await runtime.list();
    while (state[0]?.state !== 'exited' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      state = await runtime.list();
    }
    expect(state[0]).toMatchObject({ state: 'exited', exitCode: 3 });
    expect(await runtime.logs(deployed.handle)).toContain('bye');
    expect(await runtime.start(deployed.handle)).toBeGreaterThan(0);
  });

  it('fails within seconds with a clear message for an image that cannot be pulled', async () => {
    const spec: InstanceSpec = {
      nodeId,
      job: job({ name: 'nope', image: '127.0.0.1:1/none/nope:1' }),
      instance: 0,
      generation: 0,
    };
    const phases: DeployPhase[] = [];
    const started = Date.now();
    await expect(runtime.deploy(spec, (phase) => phases.push(phase))).rejects.toMatchObject({
      code: 'image_pull_failed',
      message: expect.stringMatching(/cannot pull image 127\.0\.0\.1:1\/none\/nope:1: .*(refused|connect)/),
    });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(phases).toEqual(['pulling']);
    expect(await runtime.list()).toEqual([]);
  });

  it('reads one-shot stats of a running container', async () => {
    const spec: InstanceSpec = { nodeId, job: job({ name: 'stats' }), instance: 0, generation: 0 };
    const deployed = await runtime.deploy(spec, () => undefined);
    const stats = await runtime.stats(deployed.handle);
    expect(stats?.memoryBytes).toBeGreaterThan(0);
    expect(stats?.cpuPercent).toBeGreaterThanOrEqual(0);
  });
});
