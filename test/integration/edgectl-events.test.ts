import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor, runEdgectlHere } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/** `edgectl events` filtered by job and node, and followed with -f (issue 14, item 4). */
describe('edgectl events', () => {
  let cm: RunningClusterManager;
  let node: TestNode;

  beforeAll(async () => {
    cm = await startClusterManager();
    node = await TestNode.join(cm, 'ev-node');
    for (const name of ['ev-web', 'ev-db'])
      await cm.api('/api/jobs', { method: 'POST', json: { name, image: 'edge/busybox:latest' } });
  });

  afterAll(async () => {
    await node?.close();
    await cm?.stop();
  });

  it('keeps the events of one job or one node, and names what it does not know', async () => {
    const edgectl = edgectlFor(cm);
    const web = await edgectl(['events', '--job', 'ev-web', '-o', 'json']);
    const events = JSON.parse(web.stdout) as { type: string; message: string; jobId?: string }[];
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((event) => event.message.includes('ev-web'))).toBe(true);
    const onNode = JSON.parse((await edgectl(['events', '--node', 'ev-node', '-o', 'json'])).stdout) as {
      nodeId?: string;
    }[];
    expect(onNode.length).toBeGreaterThan(0);
    expect(onNode.every((event) => event.nodeId === node.ack!.nodeId)).toBe(true);
    expect(await edgectl(['events', '--job', 'nope'])).toMatchObject({
      code: 1,
      stderr: 'error: job "nope" not found (HTTP 404)\n',
    });
    const bad = await cm.api('/api/events?after=-3');
    expect(bad.status).toBe(400);
  });

  it('follows: the newest last, then each new event of the job as it comes, until interrupted', async () => {
    const stop = new AbortController();
    let printed = '';
    const following = runEdgectlHere(['events', '-f', '--job', 'ev-web'], {
      env: { EDGE_SERVER: cm.url, EDGE_API_TOKEN: cm.apiToken, EDGE_CA_FILE: `${cm.dataDir}/tls/ca.pem` },
      signal: stop.signal,
      onStdout: (text) => {
        printed += text;
      },
    });
    await waitFor(() => printed.includes('job.created'), 'the events so far');
    // It follows the server's push (GET /api/stream), not a poll.
    await waitFor(() => cm.manager.streams.stats().open === 1, 'the stream open');
    // Oldest first: the job's first event leads (the newest-first list ends with it).
    const listed = (await (await cm.api('/api/events?job=ev-web')).json()) as { message: string }[];
    expect(printed.split('\n')[0]).toContain(listed.at(-1)!.message);
    await cm.api('/api/jobs/ev-web/replicate', { method: 'POST', json: { replicas: 2 } });
    await cm.api('/api/jobs/ev-db/replicate', { method: 'POST', json: { replicas: 2 } });
    await waitFor(() => printed.includes('job ev-web scaled from 1 to 2'), 'the new event, as it comes');
    stop.abort();
    const result = await following;
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain('ev-db');
    const lines = result.stdout.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^\S+\s+job\.scaled\s+job ev-web scaled from 1 to 2$/);
    expect(new Set(lines).size).toBe(lines.length);
  });

  it('watches jobs: the table, then a line for each job that changes, until interrupted', async () => {
    const stop = new AbortController();
    let printed = '';
    const watching = runEdgectlHere(['jobs', '-w'], {
      env: { EDGE_SERVER: cm.url, EDGE_API_TOKEN: cm.apiToken, EDGE_CA_FILE: `${cm.dataDir}/tls/ca.pem` },
      signal: stop.signal,
      onStdout: (text) => {
        printed += text;
      },
    });
    await waitFor(() => printed.startsWith('NAME'), 'the table');
    const table = printed;
    await waitFor(() => cm.manager.streams.stats().open === 1, 'the stream open');
    await cm.api('/api/jobs', { method: 'POST', json: { name: 'ev-new', image: 'edge/busybox:latest' } });
    await waitFor(
      () => /^ev-new\s+\S+\s+active\s/m.test(printed.slice(table.length)),
      'the new job, as it comes',
    );
    await cm.api('/api/jobs/ev-db', { method: 'DELETE' });
    await waitFor(
      () => /^ev-db\s+\S+\s+(deleting|deleted)/m.test(printed.slice(table.length)),
      'the deleted job, as it goes',
    );
    stop.abort();
    expect((await watching).code).toBe(0);
    // Only what changed: ev-web, untouched since, is not printed again.
    expect(printed.slice(table.length)).not.toMatch(/^ev-web\s/m);
  });

  it('follows across a restart of the cluster manager: reconnects from its last event, none missed or twice', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edge-cm-restart-'));
    let first: RunningClusterManager | undefined = await startClusterManager({ dataDir });
    let second: RunningClusterManager | undefined;
    try {
      await first.api('/api/jobs', {
        method: 'POST',
        json: { name: 'rs-job', image: 'edge/busybox:latest' },
      });
      const stop = new AbortController();
      let printed = '';
      let noted = '';
      const env = {
        EDGE_SERVER: first.url,
        EDGE_API_TOKEN: first.apiToken,
        EDGE_CA_FILE: join(dataDir, 'tls/ca.pem'),
      };
      const following = runEdgectlHere(['events', '-f', '--job', 'rs-job'], {
        env,
        signal: stop.signal,
        onStdout: (text) => {
          printed += text;
        },
        onStderr: (text) => {
          noted += text;
        },
      });
      const running = first;
      await waitFor(() => running.manager.streams.stats().open === 1, 'the stream open');
      const httpPort = Number(new URL(first.url).port);
      await first.stop({ keepData: true });
      first = undefined;
      second = await startClusterManager({ dataDir, httpPort });
      // Recorded while edgectl waits to reconnect, or after: it comes once either way.
      await second.api('/api/jobs/rs-job/replicate', { method: 'POST', json: { replicas: 2 } });
      await waitFor(() => printed.includes('job rs-job scaled from 1 to 2'), 'the event after the restart');
      expect(noted).toMatch(/^edgectl: stream interrupted \(.+\); reconnecting in \d+\.\d s$/m);
      stop.abort();
      expect((await following).code).toBe(0);
      const lines = printed.trim().split('\n');
      expect(new Set(lines).size).toBe(lines.length);
      expect(lines.filter((line) => line.includes('job.created'))).toHaveLength(1);
    } finally {
      await first?.stop();
      await second?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
