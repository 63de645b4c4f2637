import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { containersWithLabel } from '../helpers/docker.js';
import { E2eCluster, WORKLOAD } from '../helpers/e2e-cluster.js';
import { BINS, type NodeOptions, readNodeOptions } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';
import { dockerRunOnce } from './docker-run.js';
import { median, report, rssMiB } from './report.js';

/**
 * The node engine's footprint, one step at a time: the same node engine (and, given BENCH_BASELINE_DIR, an
 * older build of it) run under several Node.js settings, one after the other against one cluster manager. Each
 * gets a job and idles (telemetry every 2 s) with its RSS and CPU read; then deploys on it are timed against
 * `docker run -d`, interleaved, to see what a setting costs in latency (issue 13: at most 1.2x).
 */
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 60_000);
const DEPLOYS = Number(process.env.BENCH_FOOTPRINT_DEPLOYS ?? 10);
/**
 * Checkouts of older commits (`git worktree add`), each built (`npx tsc -p tsconfig.json && node
 * scripts/copy-assets.mjs`), comma-separated: each runs as a step of its own, with the settings of before this
 * work (a build from before lite mode may load a module that needs WebAssembly).
 */
const BASELINE_DIRS = (process.env.BENCH_BASELINE_DIRS ?? '').split(',').filter(Boolean);

const SHIPPED = readNodeOptions(join(import.meta.dirname, '..', '..', 'node-engine', 'node-options'));
const BEFORE: NodeOptions = { flags: ['--max-semi-space-size=1'], env: { MALLOC_ARENA_MAX: '2' } };

interface Variant {
  step: string;
  bin: string;
  options: NodeOptions;
}

const variants: Variant[] = BASELINE_DIRS.map((dir) => {
  const bin = join(dir, 'dist/node-engine/main.js');
  if (!existsSync(bin)) throw new Error(`BENCH_BASELINE_DIRS: ${bin} is not built`);
  const commit = execFileSync('git', ['-C', dir, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' });
  return { step: `build ${commit.slice(0, 60).trim()}`, bin, options: BEFORE };
});
variants.push(
  { step: 'plain node', bin: BINS.nodeEngine, options: { flags: [], env: {} } },
  { step: 'settings of before: semi-space 1 MiB, 2 malloc arenas', bin: BINS.nodeEngine, options: BEFORE },
  {
    step: '+ --no-opt (no TurboFan)',
    bin: BINS.nodeEngine,
    options: { ...BEFORE, flags: [...BEFORE.flags, '--no-opt'] },
  },
  { step: `node-engine/node-options (${SHIPPED.flags.join(' ')})`, bin: BINS.nodeEngine, options: SHIPPED },
);

const cluster = new E2eCluster();

beforeAll(async () => {
  await cluster.startClusterManager();
});

afterAll(async () => {
  await cluster.stop();
});

async function waitRunning(jobId: string): Promise<void> {
  await waitFor(
    async () => {
      const body = (await (await cluster.api(`/api/jobs/${jobId}`)).json()) as {
        instances: { status: string }[];
      };
      return body.instances[0]?.status === 'running';
    },
    'instance running',
    30_000,
    5,
  );
}

async function deploy(name: string, node: string): Promise<string> {
  const res = await cluster.api('/api/jobs', {
    method: 'POST',
    json: {
      name,
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      restart: { policy: 'never' },
      constraints: { nodes: [node] },
    },
  });
  return ((await res.json()) as { id: string }).id;
}

/** CPU time (user + system) a process has used, in ms: fields 14 and 15 of /proc/<pid>/stat, in 1/100 s. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * Idles for IDLE_MS: the median RSS of a read every second over the second half (one read lands before or after
 * a collection at random), and the CPU used over the whole time.
 */
async function measureIdle(pid: number): Promise<{ rssMiB: number; cpuPercent: number }> {
  const cpuBefore = cpuMs(pid);
  const started = performance.now();
  const samples: number[] = [];
  while (performance.now() - started < IDLE_MS) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (performance.now() - started >= IDLE_MS / 2) samples.push(rssMiB(pid));
  }
  const cpuPercent = ((cpuMs(pid) - cpuBefore) / (performance.now() - started)) * 100;
  return { rssMiB: median(samples), cpuPercent: Math.round(cpuPercent * 100) / 100 };
}

async function remove(jobId: string): Promise<void> {
  await cluster.api(`/api/jobs/${jobId}`, { method: 'DELETE' });
  await waitFor(() => containersWithLabel(`edge.job=${jobId}`).length === 0, 'container removed', 30_000, 50);
}

it(
  'node engine footprint: idle RSS and deploy latency per Node.js setting',
  async () => {
    const rows: Record<string, string | number>[] = [];
    for (const [index, variant] of variants.entries()) {
      const node = `footprint-${index}`;
      const engine = await cluster.startEngine(node, [], { bin: variant.bin, nodeOptions: variant.options });
      await cluster.waitForNodes([node]);
      const idleJob = await deploy(`idle-${index}`, node);
      await waitRunning(idleJob);
      const idle = await measureIdle(engine.pid);
      dockerRunOnce();
      const warm = await deploy(`warm-${index}`, node);
      await waitRunning(warm);
      await remove(warm);
      const direct: number[] = [];
      const orchestrated: number[] = [];
      for (let round = 0; round < DEPLOYS; round++) {
        direct.push(dockerRunOnce());
        const started = performance.now();
        const job = await deploy(`deploy-${index}-${round}`, node);
        await waitRunning(job);
        orchestrated.push(performance.now() - started);
        await remove(job);
      }
      const afterRss = rssMiB(engine.pid);
      await remove(idleJob);
      await engine.stop();
      rows.push({
        step: variant.step,
        idleRssMiB: idle.rssMiB,
        idleCpuPercent: idle.cpuPercent,
        rssAfterDeploysMiB: afterRss,
        dockerRunMs: Math.round(median(direct)),
        deployMs: Math.round(median(orchestrated)),
        ratio: Math.round((median(orchestrated) / median(direct)) * 100) / 100,
      });
    }
    report('node-engine-footprint', rows, { idleMs: IDLE_MS, deploys: DEPLOYS });
    expect(rows).toHaveLength(variants.length);
  },
  variants.length * (IDLE_MS + 180_000),
);
