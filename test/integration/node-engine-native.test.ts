import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { NativeRuntime } from '../../node-engine/runtimes/native.js';
import { cgroupVersion } from '../../node-engine/runtimes/native-limits.js';
import type { InstanceSpec } from '../../node-engine/runtimes/runtime.js';
import { type JobDefinition, JobDefinitionSchema } from '../../shared/index.js';

const nodeId = `ne-native-test-${process.pid}`;
const dataDirs: string[] = [];
const runtimes: NativeRuntime[] = [];

async function runtime(cgroupRoot?: string): Promise<NativeRuntime> {
  const dataDir = await mkdtemp(join(tmpdir(), 'ne-native-'));
  dataDirs.push(dataDir);
  const created = new NativeRuntime({
    nodeId,
    dataDir,
    logger: pino({ level: 'silent' }),
    stopTimeoutMs: 1000,
    ...(cgroupRoot ? { cgroupRoot } : {}),
  });
  runtimes.push(created);
  return created;
}

function spec(overrides: Record<string, unknown>, instance = 0): InstanceSpec {
  const job = JobDefinitionSchema.parse({
    id: 'native-job',
    name: 'native',
    technology: 'native',
    image: '/bin/sleep',
    command: ['30'],
    ...overrides,
  }) as JobDefinition;
  return { nodeId, job, instance, generation: 1 };
}

async function until(probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('native runtime', () => {
  afterAll(async () => {
    for (const created of runtimes) for (const w of await created.list()) await created.remove(w.handle);
    for (const dir of dataDirs) await rm(dir, { recursive: true, force: true });
  });

  it('runs a process with its limits, lists it, and removes it', async () => {
    const native = await runtime();
    const deployed = await native.deploy(
      spec({ resources: { cpus: 0.5, memoryMB: 64, pids: 32 } }),
      () => undefined,
    );
    const [workload] = await native.list();
    expect(workload).toMatchObject({ jobId: 'native-job', instance: 0, generation: 1, state: 'running' });
    const file = JSON.parse(
      readFileSync(join(dataDirs.at(-1) ?? '', 'native', deployed.handle.id, 'workload.json'), 'utf8'),
    );
    // Some limit is in place on every host: this host's cgroups (v1 or v2), or prlimit where they are not writable.
    const version = cgroupVersion();
    if (file.cgroupDirs.length > 0 && version === 1) {
      const memory = `/sys/fs/cgroup/memory/edge-node-engine/${deployed.handle.id}`;
      expect(readFileSync(`${memory}/memory.limit_in_bytes`, 'utf8').trim()).toBe('67108864');
      // The process joins its cgroups right before it execs the workload.
      await until(async () => readFileSync(`${memory}/cgroup.procs`, 'utf8').includes(String(file.pid)));
      const pids = `/sys/fs/cgroup/pids/edge-node-engine/${deployed.handle.id}`;
      expect(readFileSync(`${pids}/pids.max`, 'utf8').trim()).toBe('32');
    } else if (file.cgroupDirs.length > 0) {
      expect(version).toBe(2);
      const group = `/sys/fs/cgroup/edge-node-engine/${deployed.handle.id}`;
      expect(readFileSync(`${group}/memory.max`, 'utf8').trim()).toBe('67108864');
      expect(readFileSync(`${group}/pids.max`, 'utf8').trim()).toBe('32');
      await until(async () => readFileSync(`${group}/cgroup.procs`, 'utf8').includes(String(file.pid)));
    } else {
      expect(readFileSync(`/proc/${file.pid}/limits`, 'utf8')).toMatch(/Max address space\s+67108864/);
    }
    await until(async () => readFileSync(`/proc/${file.pid}/cmdline`, 'utf8').includes('/bin/sleep'));
    expect((await native.stats(deployed.handle))?.memoryBytes).toBeGreaterThan(0);
    await native.remove(deployed.handle);
    expect(existsSync(`/proc/${file.pid}`)).toBe(false);
    expect(await native.list()).toEqual([]);
  });

  it('writes cgroup v2 limits and joins the group before the exec (a cgroup v2 tree of its own)', async () => {
    // This host runs cgroup v1; the v2 path is exercised on a tree laid out as a cgroup2 mount is (the kernel's
    // enforcement of those files is what a real v2 host adds: see the README).
    const root = await mkdtemp(join(tmpdir(), 'ne-cgroup2-'));
    dataDirs.push(root);
    writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    writeFileSync(join(root, 'cgroup.subtree_control'), '');
    expect(cgroupVersion(root)).toBe(2);
    const native = await runtime(root);
    const deployed = await native.deploy(
      spec({ resources: { cpus: 0.5, memoryMB: 64, pids: 32 } }),
      () => undefined,
    );
    const group = join(root, 'edge-node-engine', deployed.handle.id);
    expect(readFileSync(join(group, 'cpu.max'), 'utf8')).toBe('50000 100000');
    expect(readFileSync(join(group, 'memory.max'), 'utf8')).toBe('67108864');
    expect(readFileSync(join(group, 'pids.max'), 'utf8')).toBe('32');
    // Controllers enabled on every level above the group.
    for (const level of [root, join(root, 'edge-node-engine')])
      expect(readFileSync(join(level, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory +pids');
    const [workload] = await native.list();
    const file = JSON.parse(
      readFileSync(join(dataDirs.at(-1) ?? '', 'native', deployed.handle.id, 'workload.json'), 'utf8'),
    );
    expect(workload?.state).toBe('running');
    expect(file.cgroupDirs).toEqual([group]);
    // The shell that execs the workload wrote its pid (the workload's, after the exec) into the group first.
    await until(async () => readFileSync(join(group, 'cgroup.procs'), 'utf8').trim() === String(file.pid));
    await native.remove(deployed.handle);
  });
  it('reports the exit code and output of a process that ended, and starts it again', async () => {
    const native = await runtime();
    const instance = spec({ image: '/bin/sh', command: ['-c', 'echo native-out; exit 3'] });
    const deployed = await native.deploy(instance, () => undefined);
    await until(async () => (await native.list())[0]?.state === 'exited');
    expect((await native.list())[0]).toMatchObject({ state: 'exited', exitCode: 3 });
    expect(await native.logs(deployed.handle)).toContain('native-out');
    expect(await native.start(deployed.handle, instance)).toBeGreaterThan(0);
  });

  it('refuses an image that is not an executable', async () => {
    const native = await runtime();
    await expect(
      native.deploy(spec({ image: '/nonexistent/program' }), () => undefined),
    ).rejects.toMatchObject({
      code: 'create_failed',
    });
  });
});
