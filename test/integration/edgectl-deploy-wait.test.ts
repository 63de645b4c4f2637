import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * `edgectl deploy --wait` (issue 14, item 4): it prints each instance's progress and exits 0 once every instance
 * runs, or 1 naming the reason when one cannot run; without --wait it still prints where each instance went.
 */
describe('edgectl deploy --wait', () => {
  let cm: RunningClusterManager;
  let node: TestNode;
  let dir: string;

  beforeAll(async () => {
    cm = await startClusterManager();
    node = await TestNode.join(cm, 'wait-node');
    dir = mkdtempSync(join(tmpdir(), 'deploy-wait-'));
  });

  afterAll(async () => {
    await node?.close();
    await cm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string, spec: object) => {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, JSON.stringify({ name, image: 'edge/busybox:latest', ...spec }));
    return path;
  };

  it('follows a job until every instance runs', async () => {
    const edgectl = edgectlFor(cm);
    const waiting = edgectl(['deploy', '-f', file('waited', {}), '--wait']);
    const deploy = await waitFor(
      () => node.commands.find((command) => command.command === 'deploy' && command.job.name === 'waited'),
      'the deploy',
    );
    for (const status of ['pulling', 'running'])
      await node.publish(topics.jobStatus(node.ack!.nodeId), {
        job: deploy.job.id,
        instance: 0,
        generation: deploy.generation,
        status,
        detail: status === 'pulling' ? 'pulling 50% of 2 MB (image edge/busybox:latest)' : '',
        containerId: status === 'running' ? 'c0ffee' : null,
        ts: Date.now(),
      });
    const result = await waiting;
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^created job waited \(id .+\)$/);
    expect(lines[1]).toBe('waited#0 scheduled on wait-node');
    expect(lines).toContain('waited#0 running on wait-node');
    expect(lines.at(-1)).toBe('job waited: every instance is running');
  });

  it('exits 1 naming the reason when an instance fits nowhere, and prints it without --wait too', async () => {
    const edgectl = edgectlFor(cm);
    const result = await edgectl([
      'deploy',
      '-f',
      file('too-big', { resources: { memoryMB: 10_000_000 } }),
      '--wait',
    ]);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^too-big#0 pending \(no node fits: wait-node: not enough memory/m);
    expect(result.stderr).toMatch(
      /^edgectl: cannot run: too-big#0 pending: no node fits: wait-node: not enough memory/,
    );

    const plain = await edgectl(['deploy', '-f', file('too-big-2', { resources: { memoryMB: 10_000_000 } })]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/^too-big-2#0 pending \(no node fits: /m);
  });

  it('plans (dry run): where each instance would go, or why not, changing nothing', async () => {
    const edgectl = edgectlFor(cm);
    const jobsBefore = await (await cm.api('/api/jobs')).json();
    const eventsBefore = await (await cm.api('/api/events?limit=1000')).json();
    const fits = await edgectl(['plan', '-f', file('planned', { replicas: 2 })]);
    expect(fits).toEqual({ code: 0, stdout: 'planned#0 -> wait-node\nplanned#1 -> wait-node\n', stderr: '' });
    const big = await edgectl(['plan', '-f', file('planned-big', { resources: { memoryMB: 10_000_000 } })]);
    expect(big.code).toBe(1);
    expect(big.stdout).toMatch(/^planned-big#0 cannot be placed: no node fits: wait-node: not enough memory/);
    expect(big.stderr).toBe('edgectl: 1 of 1 instances cannot be placed now\n');
    const answer = await cm.api('/api/jobs?dryRun=true', {
      method: 'POST',
      json: { name: 'planned', image: 'edge/busybox:latest' },
    });
    expect(answer.status).toBe(200);
    expect(await answer.json()).toEqual({
      dryRun: true,
      name: 'planned',
      instances: [{ number: 0, node: 'wait-node' }],
    });
    // Nothing changed: no job, no event, no command.
    expect(await (await cm.api('/api/jobs')).json()).toEqual(jobsBefore);
    expect(await (await cm.api('/api/events?limit=1000')).json()).toEqual(eventsBefore);
    expect(node.commands.some((command) => command.job.name.startsWith('planned'))).toBe(false);
    // A name a live job holds is a conflict, as it would be for real.
    const taken = await cm.api('/api/jobs?dryRun=true', {
      method: 'POST',
      json: { name: 'waited', image: 'edge/busybox:latest' },
    });
    expect(taken.status).toBe(409);
  });

  it('gives up after --timeout with the reason it waited for', async () => {
    const edgectl = edgectlFor(cm);
    const result = await edgectl(['deploy', '-f', file('slow', {}), '--wait', '--timeout', '2s']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('edgectl: still not running after 2 s; see edgectl job slow\n');
    expect(result.stdout).toContain('slow#0 scheduled on wait-node');
  });
});
