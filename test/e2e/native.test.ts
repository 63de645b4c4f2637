import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRunning, E2eCluster } from '../helpers/e2e-cluster.js';
import { waitFor } from '../helpers/wait.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('native runtime through the whole cluster', () => {
  const cluster = new E2eCluster();
  const nativeDir = () => join(cluster.dir, 'native-a', 'native');
  /** The pid file the node engine keeps for each native workload. */
  const workloads = () =>
    existsSync(nativeDir())
      ? readdirSync(nativeDir()).flatMap((name) => {
          const file = join(nativeDir(), name, 'workload.json');
          return existsSync(file)
            ? [
                {
                  dir: join(nativeDir(), name),
                  ...(JSON.parse(readFileSync(file, 'utf8')) as { pid: number }),
                },
              ]
            : [];
        })
      : [];

  beforeAll(async () => {
    await cluster.startClusterManager();
    await cluster.startEngine('native-a', ['--runtimes', 'docker,native', '--allow-native', '/bin/sh']);
    // Offers the native runtime but allows no executable: nothing native may run there.
    await cluster.startEngine('native-b', ['--runtimes', 'docker,native']);
    await cluster.waitForNodes(['native-a', 'native-b']);
  });
  afterAll(async () => {
    for (const workload of workloads()) if (alive(workload.pid)) process.kill(workload.pid, 'SIGKILL');
    await cluster.stop();
  });

  it('runs a process with its limits and output, restarts it, adopts it after a node engine restart, and removes it', async () => {
    const created = await cluster.createJob({
      name: 'native-sleeper',
      technology: 'native',
      image: '/bin/sh',
      command: ['-c', 'echo hello-native; trap "exit 0" TERM; sleep 3600 & wait'],
      resources: { memoryMB: 32, pids: 16 },
      restart: { policy: 'always' },
    });
    await cluster.waitForJob(created.id, allRunning, 'native instance running');
    const [first] = workloads();
    expect(first && alive(first.pid)).toBe(true);
    expect(created.instances[0]!.nodeName).toBe('native-a');
    // Not as root: as the node engine's --native-user (nobody by default), with no supplementary groups.
    const status = readFileSync(`/proc/${first!.pid}/status`, 'utf8');
    expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).toBe('65534');
    expect(/^Groups:[ \t]*(.*)$/m.exec(status)?.[1]?.trim()).toBe('');
    await waitFor(
      () => readFileSync(join(first!.dir, 'stdout.log'), 'utf8').includes('hello-native'),
      'output kept',
    );
    const cgroups = readFileSync(`/proc/${first!.pid}/cgroup`, 'utf8');
    const limited = cgroups.includes('edge-node-engine');
    if (limited) {
      // cgroup v1: its memory controller's line; v2: the one unified line (`0::/...`).
      const v1 = /:memory:(\/.*)$/m.exec(cgroups)?.[1];
      const v2 = /^0::(\/.*)$/m.exec(cgroups)?.[1];
      const file = v1?.includes('edge-node-engine')
        ? join('/sys/fs/cgroup/memory', v1, 'memory.limit_in_bytes')
        : join('/sys/fs/cgroup', v2 ?? '/nowhere', 'memory.max');
      expect(file).toContain('edge-node-engine');
      expect(Number(readFileSync(file, 'utf8').trim())).toBe(32 * 1024 * 1024);
    } else {
      // Without writable cgroups the node engine falls back to prlimit: the address-space limit is set.
      expect(readFileSync(`/proc/${first!.pid}/limits`, 'utf8')).toMatch(/Max address space\s+33554432/);
    }

    process.kill(first!.pid, 'SIGKILL');
    const restarted = await cluster.waitForJob(
      created.id,
      (job) => allRunning(job) && job.instances[0]!.restarts === 1,
      'restarted after kill -9',
      20_000,
    );
    expect(restarted.instances[0]!.restarts).toBe(1);
    const [second] = workloads();
    expect(second!.pid).not.toBe(first!.pid);
    expect(alive(second!.pid)).toBe(true);

    await cluster.engines.get('native-a')!.stop();
    await cluster.startEngine('native-a', ['--runtimes', 'docker,native', '--allow-native', '/bin/sh']);
    await cluster.waitForNodes(['native-a']);
    await cluster.waitForJob(created.id, allRunning, 'running after the node engine restart', 20_000);
    const adopted = workloads();
    expect(adopted.map((w) => w.pid)).toEqual([second!.pid]);

    expect((await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(() => !alive(second!.pid), 'process stopped', 20_000);
    await waitFor(() => workloads().length === 0, 'pid file removed', 10_000);
  });

  it('places a native job only where its node allows the executable, and says why nowhere else fits', async () => {
    const before = workloads().length;
    const created = await cluster.createJob({
      name: 'native-not-allowed',
      technology: 'native',
      image: '/bin/sleep',
      command: ['3600'],
    });
    const job = await cluster.job(created.id);
    expect(job.instances[0]).toMatchObject({ status: 'pending', nodeId: null });
    expect(job.instances[0]!.detail).toContain('native-a: native /bin/sleep not allowed (--allow-native)');
    expect(job.instances[0]!.detail).toContain('native-b: native /bin/sleep not allowed (--allow-native)');
    expect(workloads()).toHaveLength(before);
    await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
  });
});
