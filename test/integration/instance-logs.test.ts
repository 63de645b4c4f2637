import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig, optionSpecs } from '../../node-engine/config.js';
import { NodeEngine } from '../../node-engine/node-engine.js';
import { LOG_CHUNK_BYTES, LOG_CREDIT_BYTES, parseOptions } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { removeContainersWithLabel } from '../helpers/docker.js';
import { runEdgectlHere } from '../helpers/edgectl.js';
import { waitFor } from '../helpers/wait.js';

/**
 * `edgectl logs` and `GET /api/jobs/:id/instances/:n/logs` (issue 14): a cluster manager with its embedded broker
 * and a node engine in this process, running a Docker container and a native process that print, their output
 * streamed from the node over its own MQTT connection, with credit-based flow control.
 */
describe('instance logs through the cluster manager', () => {
  let cm: RunningClusterManager;
  let engine: NodeEngine;
  let engineApi: string;
  let dataDir: string;
  let nodeId: string;
  let env: NodeJS.ProcessEnv;

  /** Prints a numbered line on stdout and one on stderr every 0.1 s; stops at once on SIGTERM. */
  const PRINTER =
    'trap "exit 0" TERM; i=0; while true; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.1; done';

  const edgectl = (
    argv: string[],
    options: { signal?: AbortSignal; onStdout?: (text: string) => void } = {},
  ) => runEdgectlHere(['logs', ...argv], { env, ...options });

  const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  const nodeMetric = async (name: string) => metric(await (await fetch(`${engineApi}/metrics`)).text(), name);
  const cmMetric = async (name: string) => metric(await (await cm.api('/metrics')).text(), name);

  async function deploy(spec: Record<string, unknown>): Promise<string> {
    const res = await cm.api('/api/jobs', { method: 'POST', json: spec });
    expect(res.status).toBe(201);
    const job = (await res.json()) as { id: string };
    await waitFor(
      async () => {
        const view = (await (await cm.api(`/api/jobs/${job.id}`)).json()) as {
          instances: { status: string }[];
        };
        return view.instances.every((instance) => instance.status === 'running');
      },
      `job ${String(spec.name)} running`,
      60_000,
    );
    return job.id;
  }

  /** Lines of the text that match `pattern`. */
  const lines = (text: string, pattern: RegExp) => text.split('\n').filter((line) => pattern.test(line));

  beforeAll(async () => {
    cm = await startClusterManager();
    env = { EDGE_SERVER: cm.url, EDGE_API_TOKEN: cm.apiToken, EDGE_CA_FILE: `${cm.dataDir}/tls/ca.pem` };
    dataDir = mkdtempSync(join(tmpdir(), 'logs-ne-'));
    const options = parseOptions(
      optionSpecs,
      [
        ...['--cluster-manager', cm.url, '--join-token', cm.joinToken, '--name', 'logs-node'],
        ...['--data-dir', dataDir, '--port', '0', '--runtimes', 'docker,native', '--allow-native', '/bin/sh'],
        ...['--net-manager', join(dataDir, 'no-net-manager.sock'), '--telemetry-interval', '1000'],
      ],
      {},
    );
    engine = new NodeEngine(buildConfig(options), [], pino({ level: 'silent' }));
    engineApi = await engine.start();
    nodeId = await waitFor(async () => {
      const nodes = (await (await cm.api('/api/nodes')).json()) as {
        id: string;
        name: string;
        status: string;
      }[];
      return nodes.find((node) => node.name === 'logs-node' && node.status === 'online')?.id;
    }, 'the node online');
  });

  afterAll(async () => {
    for (const job of ['printer', 'native-printer', 'brief', 'native-brief', 'counter'])
      await cm?.api(`/api/jobs/${job}`, { method: 'DELETE' });
    await waitFor(
      async () => ((await (await cm.api('/api/jobs')).json()) as unknown[]).length === 0,
      'every job deleted',
      30_000,
    ).catch(() => undefined);
    await engine?.stop();
    await cm?.stop();
    if (nodeId) removeContainersWithLabel(`edge.node=${nodeId}`);
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  for (const technology of ['docker', 'native'] as const) {
    const name = technology === 'docker' ? 'printer' : 'native-printer';
    const spec =
      technology === 'docker'
        ? { name, image: 'edge/busybox:latest', command: ['sh', '-c', PRINTER] }
        : { name, technology, image: '/bin/sh', command: ['-c', PRINTER] };

    it(`follows a ${technology} instance that prints (logs -f), stdout and stderr, until the reader leaves`, async () => {
      await deploy(spec);
      await waitFor(async () => lines((await edgectl([name])).stdout, /^out 3$/).length === 1, 'some output');

      // --tail 0 -f: only what it prints from now on; seeing it proves the following.
      const reader = new AbortController();
      let followed = '';
      const following = edgectl([`${name}#0`, '-f', '--tail', '0'], {
        signal: reader.signal,
        onStdout: (text) => {
          followed += text;
        },
      });
      await waitFor(
        () => lines(followed, /^out \d+$/).length >= 3 && lines(followed, /^err \d+$/).length >= 3,
        'lines printed after the follow began',
      );
      expect(await nodeMetric('edge_node_engine_log_streams')).toBe(1);
      expect(await cmMetric('edge_cm_log_streams')).toBe(1);
      // In order, none twice, none missed: each stream's numbers follow on from each other.
      for (const stream of ['out', 'err']) {
        const numbers = lines(followed, new RegExp(`^${stream} \\d+$`)).map((line) =>
          Number(line.split(' ')[1]),
        );
        expect(numbers).toEqual(numbers.map((_, index) => numbers[0]! + index));
      }

      // The reader leaves: edgectl ends quietly, and the stream ends at the node and in the cluster manager.
      reader.abort();
      expect(await following).toMatchObject({ code: 0, stderr: '' });
      await waitFor(
        async () => (await nodeMetric('edge_node_engine_log_streams')) === 0,
        'the node stream ended',
      );
      await waitFor(async () => (await cmMetric('edge_cm_log_streams')) === 0, 'the relayed stream ended');
    });

    it(`shows the last lines of a ${technology} instance (--tail), one stream (--stream) and since a time`, async () => {
      // Docker counts the last lines of both streams together (then keeps the one asked for); native counts in
      // each file.
      const both = await edgectl([name, '--tail', '4']);
      expect(both).toMatchObject({ code: 0, stderr: '' });
      expect(lines(both.stdout, /^out \d+$/)).toHaveLength(technology === 'docker' ? 2 : 4);
      expect(lines(both.stdout, /^err \d+$/)).toHaveLength(technology === 'docker' ? 2 : 4);
      expect(both.stdout.split('\n')).toHaveLength(technology === 'docker' ? 5 : 9);
      const errors = await edgectl([name, '--tail', '6', '--stream', 'stderr']);
      expect(errors.stdout).toMatch(technology === 'docker' ? /^(err \d+\n){3}$/ : /^(err \d+\n){6}$/);
      // Since a time to come: nothing yet (native: its files were written before it, so nothing of them).
      const future = new Date(Date.now() + 3_600_000).toISOString();
      expect(await edgectl([name, '--since', future])).toEqual({ code: 0, stdout: '', stderr: '' });
      const recent = await edgectl([name, '--since', '1h', '--stream', 'stdout']);
      expect(lines(recent.stdout, /^out 0$/)).toHaveLength(1);
    });

    it(`ends a follow of a ${technology} instance once it stops, with all it printed`, async () => {
      const brief = technology === 'docker' ? 'brief' : 'native-brief';
      const script = 'echo first; sleep 2; echo last >&2; echo done';
      const created = await cm.api('/api/jobs', {
        method: 'POST',
        json:
          technology === 'docker'
            ? {
                name: brief,
                image: 'edge/busybox:latest',
                command: ['sh', '-c', script],
                restart: { policy: 'never' },
              }
            : {
                name: brief,
                technology,
                image: '/bin/sh',
                command: ['-c', script],
                restart: { policy: 'never' },
              },
      });
      expect(created.status).toBe(201);
      // Followed from while it runs (a 409 until its node has a workload for it) to its end: edgectl ends by itself.
      const result = await waitFor(async () => {
        const attempt = await edgectl([brief, '-f']);
        return attempt.code === 0 && attempt;
      }, 'a follow of the brief job');
      expect(lines(result.stdout, /^(first|last|done)$/).sort()).toEqual(['done', 'first', 'last']);
      expect(result.stderr).toBe('');
    });
  }

  it('refuses bad requests with 400 and says what is wrong, unknown jobs and instances with 404, unplaced with 409', async () => {
    for (const [query, path] of [
      ['tail=-1', 'tail'],
      ['tail=ten', 'tail'],
      ['follow=maybe', 'follow'],
      ['since=yesterday', 'since'],
      ['stream=stdin', 'stream'],
      ['tail=1&tail=2', 'tail'],
      ['bogus=1', 'bogus'],
    ]) {
      const res = await cm.api(`/api/jobs/printer/instances/0/logs?${query}`);
      expect(res.status, query).toBe(400);
      const body = (await res.json()) as { error: { code: string; details: { path: string }[] } };
      expect(body.error.code).toBe('invalid_input');
      expect(body.error.details.map((detail) => detail.path)).toContain(path);
    }
    expect((await cm.api('/api/jobs/printer/instances/x/logs')).status).toBe(400);
    expect((await cm.api('/api/jobs/nope/instances/0/logs')).status).toBe(404);
    expect((await cm.api('/api/jobs/printer/instances/7/logs')).status).toBe(404);
    const pending = await cm.api('/api/jobs', {
      method: 'POST',
      json: { name: 'nowhere', image: 'edge/busybox:latest', constraints: { nodes: ['no-such-node'] } },
    });
    expect(pending.status).toBe(201);
    const unplaced = await cm.api('/api/jobs/nowhere/instances/0/logs');
    expect(unplaced.status).toBe(409);
    expect(((await unplaced.json()) as { error: { code: string } }).error.code).toBe('not_placed');
    await cm.api('/api/jobs/nowhere', { method: 'DELETE' });
    // edgectl: a bad flag value is a usage error (exit 2), an API error exit 1 with its message.
    expect((await edgectl(['printer', '--since', 'yesterday'])).code).toBe(2);
    expect((await edgectl(['printer#x'])).code).toBe(2);
    expect(await edgectl(['nope'])).toMatchObject({ code: 1, stderr: expect.stringContaining('not found') });
  });

  it('reads no faster than a reader that stops: the node waits for credit while the output grows', async () => {
    // Numbers, 200,000 a burst, a burst every 0.3 s (5 MB/s): a reader that does not read is soon far behind.
    const counter = 'n=1; while :; do seq $n $((n+199999)); n=$((n+200000)); sleep 0.3; done';
    await deploy({
      name: 'counter',
      technology: 'native',
      image: '/bin/sh',
      command: ['-c', counter],
      logs: { maxSizeMB: 1000 },
    });
    const outputBytes = () => {
      const dir = join(dataDir, 'native');
      const workload = readdirSync(dir).find((entry) => entry.startsWith('edge-counter-'));
      return statSync(join(dir, workload!, 'stdout.log')).size;
    };
    const readBytes = () => nodeMetric('edge_node_engine_log_read_bytes_total');
    let text = '';
    let stopped = false;
    let response: IncomingMessage | undefined;
    const client = request(new URL(`${cm.url}/api/jobs/counter/instances/0/logs?follow=true&stream=stdout`), {
      ca: cm.ca,
      agent: false,
      headers: { authorization: `Bearer ${cm.apiToken}` },
    });
    client.on('response', (res) => {
      response = res;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        // The reader stops after its first megabyte (until the test resumes it).
        if (!stopped && text.length > 1_000_000) {
          stopped = true;
          res.pause();
        }
      });
    });
    client.on('error', () => undefined);
    client.end();
    await waitFor(() => response?.isPaused(), 'the reader paused');
    expect(response!.statusCode).toBe(200);
    // What can be on its way to a reader that reads nothing: the sockets' buffers at their largest (the kernel's
    // limits), the credit window, and the HTTP response's own buffer. The node must read no more than that.
    const maximum = (file: string) => Number(readFileSync(file, 'utf8').trim().split(/\s+/).at(-1));
    const inFlight =
      maximum('/proc/sys/net/ipv4/tcp_rmem') +
      maximum('/proc/sys/net/ipv4/tcp_wmem') +
      LOG_CREDIT_BYTES +
      LOG_CHUNK_BYTES * 3 +
      1_000_000;
    const received = text.length;
    // Soon the node reads nothing more while the workload writes megabytes: it waits for credit.
    await waitFor(
      async () => {
        const before = await readBytes();
        const written = outputBytes();
        await waitFor(() => outputBytes() > written + 5_000_000, 'the output grown by 5 MB');
        return (await readBytes()) === before;
      },
      'the node stopped reading',
      90_000,
    );
    expect(await nodeMetric('edge_node_engine_log_streams_waiting_for_credit')).toBe(1);
    // ... however far the output runs ahead.
    await waitFor(() => outputBytes() > received + inFlight + 5_000_000, 'the output far ahead', 90_000);
    expect(await readBytes()).toBeLessThanOrEqual(received + inFlight);

    // Reading again: it goes on where it stopped, every number once, in order.
    const stoppedAt = await readBytes();
    response!.resume();
    await waitFor(async () => (await readBytes()) > stoppedAt + 1_000_000, 'the node reading again');
    const numbers = text.split('\n').slice(0, -1).map(Number);
    expect(numbers.length).toBeGreaterThan(100_000);
    expect(numbers.every((number, index) => number === index + 1)).toBe(true);

    // The reader disconnects: the stream ends at the node.
    client.destroy();
    await waitFor(
      async () => (await nodeMetric('edge_node_engine_log_streams')) === 0,
      'the node stream ended',
    );
    await cm.api('/api/jobs/counter', { method: 'DELETE' });
  }, 240_000);
});
