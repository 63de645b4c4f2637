import { execFileSync, spawn } from 'node:child_process';
import { inspectContainer } from '../helpers/docker.js';
import type { E2eCluster } from '../helpers/e2e-cluster.js';
import { overlayJob } from '../helpers/overlay.js';

/** Measuring paths between two network namespaces (the overlay benches): iperf3 and ping, run with nsenter. */

export const IPERF_SECONDS = Number(process.env.BENCH_IPERF_S ?? 10);
export const PINGS = Number(process.env.BENCH_PINGS ?? 200);

export interface Endpoint {
  /** Runs a command in the endpoint's network namespace. */
  prefix: string[];
  /** The address the other side connects to. */
  address: string;
}

/** A busybox job on `node`, running on the overlay: its container's network namespace and its instance IP. */
export async function placeMeasured(cluster: E2eCluster, name: string, node: string): Promise<Endpoint> {
  const { container, instanceIp } = await overlayJob(cluster, name, node);
  const pid = inspectContainer(container).State.Pid;
  return { prefix: ['nsenter', '-t', String(pid), '-n'], address: instanceIp };
}

export interface PathSamples {
  gbits: number[];
  retransmits: number[];
  /** RTTs of pings 10 ms apart, and 1 ms apart. */
  rtts: number[];
  steadyRtts: number[];
}

/** `rounds` of iperf3 and both pings on every path, the paths interleaved in each round. */
export async function measurePaths(
  paths: Map<string, { client: Endpoint; server: Endpoint }>,
  rounds: number,
): Promise<Map<string, PathSamples>> {
  const results = new Map<string, PathSamples>();
  for (let round = 0; round < rounds; round++) {
    for (const [name, { client, server }] of paths) {
      const entry = results.get(name) ?? { gbits: [], rtts: [], steadyRtts: [], retransmits: [] };
      results.set(name, entry);
      const { gbits, retransmits } = await iperf(client, server);
      entry.gbits.push(gbits);
      entry.retransmits.push(retransmits);
      entry.rtts.push(...ping(client, server.address));
      entry.steadyRtts.push(...ping(client, server.address, '0.001'));
    }
  }
  return results;
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
