import { join } from 'node:path';
import { type NetManagerStatus, NetManagerStatusSchema } from '../../shared/index.js';
import { containersWithLabel } from './docker.js';
import { allRunning, type E2eCluster, WORKLOAD } from './e2e-cluster.js';
import { BINS, Program } from './programs.js';

/** Something that runs commands in a worker's network namespace (a TestHost, a NattedHost). */
interface Worker {
  exec(command: string, args: string[], timeoutMs?: number): string;
}

/** Where a worker's net manager keeps its state (and its socket), under the cluster's test dir. */
export function netManagerDir(cluster: E2eCluster, worker: string): string {
  return join(cluster.dir, `nm-${worker}`);
}

/**
 * A worker joined to the overlay: its net manager (in the worker's namespace, with `flags`), then its node engine
 * handing over to it. Returns the net manager's program.
 */
export async function startOverlayWorker(
  cluster: E2eCluster,
  worker: string,
  host: { execPrefix: string[]; namespace: string },
  flags: string[] = [],
): Promise<Program> {
  const dataDir = netManagerDir(cluster, worker);
  const nm = Program.start(
    `nm-${worker}`,
    BINS.netManager,
    ['--data-dir', dataDir, ...flags],
    {},
    host.execPrefix,
  );
  await nm.waitForLog(/net manager listening/);
  await cluster.startEngine(worker, ['--net-manager', join(dataDir, 'net-manager.sock')], {
    netns: host.namespace,
  });
  return nm;
}

/** A net manager's `GET /v1/status`, asked over its local socket from inside its worker's namespace. */
export function netManagerStatus(worker: Worker, dataDir: string): NetManagerStatus {
  const socket = join(dataDir, 'net-manager.sock');
  return NetManagerStatusSchema.parse(
    JSON.parse(worker.exec('curl', ['-s', '--unix-socket', socket, 'http://x/v1/status'])),
  );
}

/** A busybox job on `worker`, running and on the overlay: its id, instance IP and running container. */
export async function overlayJob(
  cluster: E2eCluster,
  name: string,
  worker: string,
): Promise<{ id: string; instanceIp: string; container: string }> {
  const job = await cluster.createJob({
    name,
    image: 'edge/busybox:latest',
    command: WORKLOAD,
    constraints: { nodes: [worker] },
  });
  const body = (await cluster.waitForJob(
    job.id,
    (view) =>
      allRunning(view) &&
      (view as { instances: { namespaceIp?: string }[] }).instances.every((i) => i.namespaceIp),
    `${name} running on the overlay`,
  )) as unknown as { instances: { instanceIp: string }[] };
  const container = containersWithLabel(`edge.job=${job.id}`).find((c) => c.state === 'running')!.id;
  return { id: job.id, instanceIp: body.instances[0]!.instanceIp, container };
}
