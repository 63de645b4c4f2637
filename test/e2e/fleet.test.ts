import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { E2eCluster } from '../helpers/e2e-cluster.js';
import { BINS, Program } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

const WORKERS = Number(process.env.FLEET_E2E_WORKERS ?? 2000);
const JOBS = 200;
const REPLICAS = 5;

interface NodeBody {
  name: string;
  status: string;
}
interface JobBody {
  id: string;
  instances: { status: string }[];
}
interface EventBody {
  type: string;
  message: string;
}

/**
 * A fleet of hollow workers (edge-fleet-sim: the real protocol, no containers) on one cluster manager with its
 * embedded broker, everything on this machine's two cores: a burst of job posts must leave every instance
 * running and no live worker offline, and a stall of the cluster manager's whole process (SIGSTOP for 8 s, as a
 * paused VM or a blocked event loop) must not take any node offline.
 */
describe(`a fleet of ${WORKERS} hollow workers`, () => {
  const cluster = new E2eCluster({ registrationRate: 1000, nodeTimeoutMs: 6000 });
  let fleet: Program | undefined;

  const nodes = async () => (await (await cluster.api('/api/nodes')).json()) as NodeBody[];
  const events = async (type: string) =>
    (await (await cluster.api(`/api/events?limit=1000&type=${type}`)).json()) as EventBody[];
  const allOnline = async () => {
    const listed = await nodes();
    return listed.length === WORKERS && listed.every((node) => node.status === 'online');
  };

  beforeAll(async () => {
    await cluster.startClusterManager();
    fleet = Program.start(
      'fleet-sim',
      BINS.fleetSim,
      [
        ...['--cluster-manager', cluster.url],
        ...['--workers', String(WORKERS), '--connect-rate', '400', '--telemetry-interval', '2000'],
        ...['--report-every', '5'],
      ],
      { FLEET_JOIN_TOKEN: cluster.joinToken },
    );
    await waitFor(allOnline, `${WORKERS} hollow workers online`, 60_000, 1000);
  }, 90_000);

  afterAll(async () => {
    await fleet?.stop();
    await cluster.stop();
  });

  it(`runs a burst of ${JOBS} jobs x ${REPLICAS} with no worker going offline`, {
    timeout: 120_000,
  }, async () => {
    const posted: string[] = [];
    const post = async (index: number) => {
      const response = await cluster.api('/api/jobs', {
        method: 'POST',
        json: {
          name: `burst-${index}`,
          image: 'edge/busybox:latest',
          command: ['sleep', '3600'],
          replicas: REPLICAS,
          resources: { cpus: 0.1, memoryMB: 16 },
        },
      });
      expect(response.status, await response.clone().text()).toBe(201);
      posted.push(((await response.json()) as JobBody).id);
    };
    // As fast as HTTP takes them: 20 in flight at a time.
    for (let start = 0; start < JOBS; start += 20)
      await Promise.all(Array.from({ length: Math.min(20, JOBS - start) }, (_, i) => post(start + i)));
    await waitFor(
      async () => {
        const jobs = (await (await cluster.api('/api/jobs')).json()) as JobBody[];
        const running = jobs.flatMap((job) => job.instances).filter((i) => i.status === 'running').length;
        return running === JOBS * REPLICAS;
      },
      `all ${JOBS * REPLICAS} instances running`,
      60_000,
      1000,
    );
    expect(posted).toHaveLength(JOBS);
    expect(await events('node.offline')).toEqual([]);
    expect(await allOnline()).toBe(true);
    expect((await cluster.api('/api/health')).status).toBe(200);
    expect(fleet!.running).toBe(true);
  });

  it('takes no node offline for an 8 s stall of the whole cluster manager process', {
    timeout: 60_000,
  }, async () => {
    const pid = cluster.cm!.pid;
    process.kill(pid, 'SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 8000));
    process.kill(pid, 'SIGCONT');
    // Longer than the node timeout after the stall: an offline would have come by now.
    await new Promise((resolve) => setTimeout(resolve, 8000));
    expect(await events('node.offline')).toEqual([]);
    expect(await allOnline()).toBe(true);
    const metrics = await (await cluster.api('/metrics')).text();
    const stalled = Number(/^edge_cm_event_loop_stalled_seconds (\S+)$/m.exec(metrics)?.[1]);
    expect(stalled).toBeGreaterThanOrEqual(7.5);
  });
});
