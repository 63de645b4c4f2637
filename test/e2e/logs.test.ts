import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_TOKEN, allRunning, E2eCluster } from '../helpers/e2e-cluster.js';
import { BINS } from '../helpers/programs.js';
import { waitFor } from '../helpers/wait.js';

/** The built edgectl, its output into `sh -c` so that a pipe can stand between it and its reader. */
function edgectlPiped(
  cluster: E2eCluster,
  pipeline: string,
): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn('sh', ['-c', `"${process.execPath}" "${BINS.edgectl}" ${pipeline}`], {
    env: {
      ...process.env,
      EDGE_SERVER: cluster.url,
      EDGE_API_TOKEN: API_TOKEN,
      EDGE_CA_FILE: join(cluster.cmDataDir, 'tls', 'ca.pem'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  child.stderr.on('data', (chunk) => {
    err += chunk;
  });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out, err })));
}

/**
 * `edgectl logs` as an operator runs it, the built programs end to end: a cluster manager, a node engine that
 * dialled out to it, and edgectl into a pipe whose reader goes away (`| head`).
 */
describe('instance logs through the built programs', () => {
  const cluster = new E2eCluster();

  beforeAll(async () => {
    await cluster.start(['logs-e2e']);
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it('follows a container into `| head -3`, which ends edgectl quietly and the stream on the node', async () => {
    const job = await cluster.createJob({
      name: 'ticker',
      image: 'edge/busybox:latest',
      command: [
        'sh',
        '-c',
        'trap "exit 0" TERM; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.2; done',
      ],
    });
    await cluster.waitForJob(job.id, allRunning, 'the ticker running');
    const result = await edgectlPiped(cluster, 'logs ticker -f | head -3');
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/^tick 0\ntick 1\ntick 2\n$/);
    expect(result.err).toBe('');
    // edgectl went with its reader: the node engine serves no stream any more.
    const metrics = () =>
      fetch(`http://127.0.0.1:${cluster.enginePort('logs-e2e')}/metrics`).then((res) => res.text());
    await waitFor(
      async () => /^edge_node_engine_log_streams 0$/m.test(await metrics()),
      'the stream ended on the node',
    );
    const tail = await edgectlPiped(cluster, 'logs ticker --tail 1');
    expect(tail).toMatchObject({ code: 0, err: '' });
    expect(tail.out).toMatch(/^tick \d+\n$/);
  });
});
