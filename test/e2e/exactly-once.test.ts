import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ContainerSummary, containersWithLabel } from '../helpers/docker.js';
import { allRunning, E2eCluster, type JobBody, WORKLOAD } from '../helpers/e2e-cluster.js';
import { Mosquitto } from '../helpers/mosquitto.js';
import { waitFor } from '../helpers/wait.js';

const BURST = 50;
const CONCURRENCY = 5;
const NODE_TIMEOUT_MS = 4000;
/** Each of the concurrent posters waits this long between its posts: the burst lasts a few seconds. */
const PACE_MS = 400;

/** Every container of the cluster's nodes, as `docker ps -a` sees them. */
const containersOf = (cluster: E2eCluster): ContainerSummary[] =>
  [...cluster.nodeIds.values()].flatMap((nodeId) => containersWithLabel(`edge.node=${nodeId}`));

const listJobs = async (cluster: E2eCluster): Promise<JobBody[]> => {
  const res = await cluster.api('/api/jobs');
  if (res.status !== 200) throw new Error(`GET /api/jobs answered ${res.status}`);
  return (await res.json()) as JobBody[];
};

/**
 * What is wrong with the cluster compared to "every job the API lists runs each instance exactly once, in a
 * running container, and nothing else runs": an empty list when it is settled.
 */
function problems(jobs: JobBody[], containers: ContainerSummary[], replicas: number): string[] {
  const found: string[] = [];
  const listed = new Map(jobs.map((job) => [job.id, job]));
  for (const container of containers) {
    const jobId = container.labels['edge.job'] ?? '';
    if (!listed.has(jobId)) found.push(`container ${container.name} of a job the API does not list`);
  }
  for (const job of jobs) {
    if (job.state !== 'active') found.push(`${job.name}: state ${job.state}`);
    if (job.instances.length !== replicas || !allRunning(job))
      found.push(`${job.name}: ${job.instances.map((i) => `#${i.number} ${i.status}`).join(', ')}`);
    for (const instance of job.instances) {
      const copies = containers.filter(
        (c) => c.labels['edge.job'] === job.id && c.labels['edge.instance'] === String(instance.number),
      );
      if (copies.length !== 1 || copies[0]!.state !== 'running')
        found.push(`${job.name}#${instance.number}: containers ${copies.map((c) => c.state).join(', ')}`);
    }
    const strays = containers.filter(
      (c) =>
        c.labels['edge.job'] === job.id &&
        !job.instances.some((instance) => String(instance.number) === c.labels['edge.instance']),
    );
    if (strays.length > 0) found.push(`${job.name}: ${strays.length} container(s) of no instance`);
  }
  return found;
}

/** Waits until `problems` finds nothing, and that it stays so for `stableMs` (no late duplicate appears). */
async function waitForSettled(cluster: E2eCluster, replicas: number, timeoutMs: number, stableMs = 3000) {
  let last: string[] = [];
  let settledSince: number | undefined;
  try {
    return await waitFor(
      async () => {
        const jobs = await listJobs(cluster);
        last = problems(jobs, containersOf(cluster), replicas);
        if (last.length > 0) {
          settledSince = undefined;
          return false;
        }
        settledSince ??= Date.now();
        return Date.now() - settledSince >= stableMs && jobs;
      },
      'every listed job running exactly once, and nothing else',
      timeoutMs,
      250,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${last.slice(0, 20).join('\n')}`);
  }
}

describe('exactly-once in effect: broker restart and cluster manager kill -9 during a burst of job posts', () => {
  let broker: Mosquitto;
  let cluster: E2eCluster;

  beforeAll(async () => {
    broker = await Mosquitto.start();
    cluster = new E2eCluster({ mqttUrl: broker.url, nodeTimeoutMs: NODE_TIMEOUT_MS });
    await cluster.start(['once-a', 'once-b']);
  });
  afterAll(async () => {
    await cluster?.stop();
    await broker?.stop();
  });

  it(`every job that got a 201 runs once, nothing else runs, and deleting them all removes every container`, {
    timeout: 300_000,
  }, async () => {
    const apiUp = () =>
      waitFor(
        async () => (await cluster.api('/api/health')).ok,
        'the cluster manager answering again',
        30_000,
        100,
      );

    type Outcome = { name: string; status: number | 'network error'; id?: string };
    const outcomes: Outcome[] = [];
    let started = 0;
    const timeline: string[] = [];
    const post = async (): Promise<void> => {
      while (started < BURST) {
        const name = `once-${started++}`;
        try {
          const res = await cluster.api('/api/jobs', {
            method: 'POST',
            json: { name, image: 'edge/busybox:latest', command: WORKLOAD, replicas: 1 },
            signal: AbortSignal.timeout(20_000),
          });
          const body = (await res.json()) as { id?: string };
          outcomes.push({ name, status: res.status, ...(body.id ? { id: body.id } : {}) });
        } catch {
          // The cluster manager died under the request: it may or may not have committed the job. Carry on
          // with the next job once it answers again (this one is not retried: its fate is for the API to say).
          outcomes.push({ name, status: 'network error' });
          await apiUp();
        }
        // A steady stream rather than one spike, so that the faults below land in the middle of it.
        await new Promise((resolve) => setTimeout(resolve, PACE_MS));
      }
    };

    // Faults in the middle of the burst: the broker goes away for a while, then the cluster manager dies
    // right after a post went out (that post's job may or may not be committed).
    const faults = async (): Promise<void> => {
      await waitFor(() => outcomes.length >= 6, '6 posts answered', 60_000, 5);
      await broker.halt();
      timeline.push(`broker stopped after ${outcomes.length} answers`);
      const haltedAt = Date.now();
      await waitFor(() => Date.now() - haltedAt >= 1000, 'the broker down for 1 s', 10_000, 5);
      await broker.startAgain();
      // The cluster manager back on the broker (its second connection), then it dies a few posts later.
      const cm = cluster.cm!;
      await waitFor(
        () => (cm.output.match(/connected to the MQTT broker/g) ?? []).length >= 2,
        'the cluster manager connected to the broker again',
        20_000,
        20,
      );
      timeline.push(`broker back after ${outcomes.length}`);
      const crashAt = Math.min(BURST - 2, started + 3);
      await waitFor(() => started >= crashAt, `post ${crashAt} on its way`, 60_000, 2);
      // A few milliseconds later, so that the post in flight is sometimes committed and sometimes not.
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 15)));
      await cluster.cm!.crash();
      timeline.push(`cluster manager killed after ${outcomes.length} answers, ${started} posts started`);
      await cluster.startClusterManager();
      timeline.push(`cluster manager back after ${outcomes.length}`);
    };

    await Promise.all([faults(), ...Array.from({ length: CONCURRENCY }, post)]);
    const created = outcomes.filter((outcome) => outcome.status === 201);
    const lost = outcomes.filter((outcome) => outcome.status === 'network error');
    // Nothing but the crash may fail a request: every post is valid and every name is new.
    expect(
      outcomes.filter((outcome) => outcome.status !== 201 && outcome.status !== 'network error'),
    ).toEqual([]);
    expect(created.length).toBeGreaterThanOrEqual(BURST - CONCURRENCY);

    const jobs = await waitForSettled(cluster, 1, 150_000);
    const listed = new Map(jobs.map((job) => [job.name, job]));
    // No node was down: the broker restart and the cluster manager's crash moved nothing (a move or a
    // replacement raises the generation) and nothing ran twice on the way.
    expect(
      jobs.flatMap((job) =>
        job.instances.filter((i) => i.generation !== 1).map((i) => `${job.name}#${i.number}`),
      ),
    ).toEqual([]);
    for (const outcome of created) expect(listed.get(outcome.name)?.id).toBe(outcome.id);
    // The API lists only jobs that were posted: each with a 201, or lost with the cluster manager's crash.
    const posted = new Set([...created, ...lost].map((outcome) => outcome.name));
    expect([...listed.keys()].filter((name) => !posted.has(name))).toEqual([]);
    console.log(
      `burst: ${created.length} created (201), ${lost.length} lost with the crash, of which ` +
        `${lost.filter((outcome) => listed.has(outcome.name)).length} committed; ${jobs.length} jobs running; ` +
        timeline.join('; '),
    );

    for (const job of jobs)
      expect((await cluster.api(`/api/jobs/${job.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(
      async () => (await listJobs(cluster)).length === 0 && containersOf(cluster).length === 0,
      'every job gone and every container removed',
      120_000,
      250,
    );
  });

  it('a broker outage longer than the node timeout takes no node offline and moves nothing', {
    timeout: 120_000,
  }, async () => {
    const created = await cluster.createJob({
      name: 'still',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 4,
    });
    const before = await cluster.waitForJob(created.id, allRunning, 'four instances running');
    expect(new Set(before.instances.map((instance) => instance.nodeId)).size).toBe(2);
    const containersBefore = containersWithLabel(`edge.job=${created.id}`)
      .map((c) => c.id)
      .sort();
    const eventsSince = Date.now();

    // The cluster manager hears nothing from any node for longer than the node timeout, through no fault of
    // theirs: it must not send their instances elsewhere.
    await broker.halt();
    const haltedAt = Date.now();
    await waitFor(() => Date.now() - haltedAt >= NODE_TIMEOUT_MS + 2000, 'the outage', 20_000, 50);
    await broker.startAgain();
    await cluster.waitForNodes(['once-a', 'once-b']);
    const settled = (await waitForSettled(cluster, 4, 60_000)).find((job) => job.id === created.id);
    expect(settled?.instances.map((i) => [i.number, i.nodeId, i.generation])).toEqual(
      before.instances.map((i) => [i.number, i.nodeId, i.generation]),
    );
    expect(
      containersWithLabel(`edge.job=${created.id}`)
        .map((c) => c.id)
        .sort(),
    ).toEqual(containersBefore);
    const events = (await (await cluster.api('/api/events?limit=200')).json()) as {
      ts: number;
      type: string;
    }[];
    expect(events.filter((event) => event.ts >= eventsSince && event.type === 'node.offline')).toEqual([]);

    expect((await cluster.api(`/api/jobs/${created.id}`, { method: 'DELETE' })).status).toBe(202);
    await waitFor(
      async () => (await listJobs(cluster)).length === 0 && containersOf(cluster).length === 0,
      'the job gone and its containers removed',
      60_000,
      250,
    );
  });
});

describe('offline autonomy: a node engine restarted with the cluster manager down', () => {
  let cluster: E2eCluster;

  beforeAll(async () => {
    cluster = new E2eCluster();
    await cluster.start(['alone-a', 'alone-b']);
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  const runningOn = (nodeId: string, jobId: string) =>
    containersWithLabel(`edge.node=${nodeId}`).filter(
      (c) => c.labels['edge.job'] === jobId && c.state === 'running',
    );

  it('starts its containers again from its local desired state, and reconciles without duplicates when the cluster manager returns', {
    timeout: 180_000,
  }, async () => {
    // Pinned to alone-a: nothing else may run it, so what runs after the "reboot" can only come from alone-a.
    const created = await cluster.createJob({
      name: 'alone',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      replicas: 2,
      constraints: { nodes: ['alone-a'] },
    });
    const other = await cluster.createJob({
      name: 'alone-other',
      image: 'edge/busybox:latest',
      command: WORKLOAD,
      constraints: { nodes: ['alone-b'] },
    });
    await cluster.waitForJob(created.id, allRunning, 'both instances running on alone-a');
    const otherRunning = await cluster.waitForJob(other.id, allRunning, 'the other job running on alone-b');
    const nodeA = cluster.nodeIds.get('alone-a')!;
    const nodeB = cluster.nodeIds.get('alone-b')!;
    const before = runningOn(nodeA, created.id);
    expect(before.map((c) => c.labels['edge.instance']).sort()).toEqual(['0', '1']);

    // A reboot of alone-a while cut off: the engine dies, its containers are gone, the cluster manager is away.
    await cluster.engines.get('alone-a')!.crash();
    execFileSync('docker', ['rm', '-f', ...before.map((c) => c.id)], { stdio: 'ignore' });
    expect(containersWithLabel(`edge.node=${nodeA}`)).toEqual([]);
    await cluster.cm!.stop();
    const engine = await cluster.startEngine('alone-a');

    const back = await waitFor(
      () => {
        const running = runningOn(nodeA, created.id);
        const all = containersWithLabel(`edge.node=${nodeA}`);
        return all.length === 2 && running.length === 2 && running;
      },
      'both instances running again on alone-a without the cluster manager',
      45_000,
      250,
    );
    expect(back.map((c) => c.labels['edge.instance']).sort()).toEqual(['0', '1']);
    for (const container of back) {
      const old = before.find((c) => c.labels['edge.instance'] === container.labels['edge.instance'])!;
      expect(container.id).not.toBe(old.id);
      expect(container.labels['edge.generation']).toBe(old.labels['edge.generation']);
    }
    expect(engine.running).toBe(true);
    expect(engine.output).toMatch(/cannot reach the cluster manager/);

    // The cluster manager returns: the node reconciles with it, and nothing runs twice.
    await cluster.startClusterManager();
    await cluster.waitForNodes(['alone-a', 'alone-b'], 60_000);
    const settled = await cluster.waitForJob(
      created.id,
      (job) =>
        allRunning(job) &&
        job.instances.length === 2 &&
        job.instances.every(
          (instance) => instance.nodeId === nodeA && back.some((c) => c.id === instance.containerId),
        ),
      'both instances running in the API, in the containers started while offline',
      45_000,
    );
    expect(settled.instances.map((instance) => instance.number)).toEqual([0, 1]);
    expect(
      runningOn(nodeA, created.id)
        .map((c) => c.id)
        .sort(),
    ).toEqual(back.map((c) => c.id).sort());
    expect(containersWithLabel(`edge.node=${nodeA}`)).toHaveLength(2);
    // The other node went on untouched.
    expect(runningOn(nodeB, other.id).map((c) => c.id)).toEqual([otherRunning.instances[0]!.containerId]);
    expect((await cluster.job(other.id)).instances[0]).toMatchObject({ status: 'running', nodeId: nodeB });
  });
});
