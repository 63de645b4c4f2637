import { execFileSync, spawn } from 'node:child_process';
import { containersWithLabel, inspectContainer } from '../helpers/docker.js';
import { allRunning, type E2eCluster, WORKLOAD } from '../helpers/e2e-cluster.js';

/** Measuring paths between two network namespaces (the overlay benches): iperf3 and ping, run with nsenter. */

export const IPERF_SECONDS = Number(process.env.BENCH_IPERF_S ?? 10);
export const PINGS = Number(process.env.BENCH_PINGS ?? 200);

export interface Endpoint {
  /** Runs a command in the endpoint's network namespace. */
  prefix: string[];
  /** The address the other side connects to. */
  address: string;
}

/** A busybox job on `node`, running: its container's network namespace and its instance IP, to measure from. */
export async function placeMeasured(cluster: E2eCluster, name: string, node: string): Promise<Endpoint> {
  const job = await cluster.createJob({
    name,
    image: 'edge/busybox:latest',
    command: WORKLOAD,
    constraints: { nodes: [node] },
  });
  const running = await cluster.waitForJob(job.id, allRunning, `${name} running`);
  const container = containersWithLabel(`edge.job=${job.id}`)[0]!.id;
  const pid = inspectContainer(container).State.Pid;
  const instance = running.instances[0] as { instanceIp?: string };
  return { prefix: ['nsenter', '-t', String(pid), '-n'], address: instance.instanceIp! };
}

export async function iperf(
  client: Endpoint,
  server: Endpoint,
): Promise<{ gbits: number; retransmits: number }> {
  const [command, ...args] = [...server.prefix, 'iperf3', '-s', '-1'];
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise((resolve) => setTimeout(resolve, 500));
  try {
    const out = execFileSync(
      client.prefix[0]!,
      [...client.prefix.slice(1), 'iperf3', '-c', server.address, '-t', String(IPERF_SECONDS), '-J'],
      { encoding: 'utf8', timeout: (IPERF_SECONDS + 20) * 1000 },
    );
    const json = JSON.parse(out) as {
      error?: string;
      end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } };
    };
    if (json.error) throw new Error(`iperf3 to ${server.address}: ${json.error}`);
    return {
      gbits: json.end.sum_received.bits_per_second / 1e9,
      retransmits: json.end.sum_sent.retransmits ?? 0,
    };
  } finally {
    child.kill();
  }
}

/**
 * RTTs in ms of `PINGS` echo requests, 10 ms apart (sparse traffic: every packet finds the forwarders idle,
 * their caches cold) or 1 ms apart (steady traffic).
 */
export function ping(client: Endpoint, address: string, interval = '0.01', count = PINGS): number[] {
  const out = execFileSync(
    client.prefix[0]!,
    [...client.prefix.slice(1), 'ping', '-n', '-c', String(count), '-i', interval, address],
    { encoding: 'utf8', timeout: 60_000 },
  );
  return [...out.matchAll(/time=([\d.]+) ms/g)].map((match) => Number(match[1]));
}
