import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Job, JobVersion } from '../../shared/index.js';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { ObedientNode } from '../helpers/obedient-node.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Job updates through the API and edgectl (issue 14, item 1), against a cluster manager and nodes that speak the
 * protocol: each node runs what it is told at once (it reports `running`, and `stopped` on a delete), so that the
 * roll-out's decisions can be watched command by command. With real dockerd: test/e2e/rolling-update.test.ts.
 */
describe('job updates', () => {
  let cm: RunningClusterManager;
  let nodes: ObedientNode[] = [];
  let dir: string;

  async function obedientNode(name: string, cpus = 4): Promise<ObedientNode> {
    const node = await ObedientNode.join(cm, name, { cpus });
    nodes.push(node);
    return node;
  }

  beforeAll(async () => {
    cm = await startClusterManager();
    dir = mkdtempSync(join(tmpdir(), 'job-updates-'));
  });
  afterEach(async () => {
    // Each test's jobs go with it: none is placed again on the next test's nodes.
    const jobs = (await (await cm.api('/api/jobs')).json()) as Job[];
    for (const job of jobs) await cm.api(`/api/jobs/${job.id}`, { method: 'DELETE' });
    await Promise.all(nodes.map((node) => node.close()));
    // And its nodes: a node just closed may count as online for a while (right after a restart of the cluster
    // manager, its last will is not believed), and the next test's jobs would be placed there.
    for (const node of nodes) await cm.api(`/api/nodes/${node.nodeId}`, { method: 'DELETE' });
    nodes = [];
  });
  afterAll(async () => {
    await cm?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  type Rolled = Job & { change?: { action: string; changed: string[] } };
  const getJob = async (id: string) => (await (await cm.api(`/api/jobs/${id}`)).json()) as Rolled;
  const put = (id: string, json: unknown, query = '') =>
    cm.api(`/api/jobs/${id}${query}`, { method: 'PUT', json });
  const rolledOut = (id: string, version: number) =>
    waitFor(
      async () => {
        const job = await getJob(id);
        return job.rollout?.version === version && job.rollout.state === 'succeeded' && job;
      },
      `version ${version} rolled out`,
      20_000,
    );
  const spec = (name: string, extra: Record<string, unknown> = {}) => ({
    name,
    image: 'edge/busybox:latest',
    replicas: 2,
    resources: { cpus: 1 },
    update: { minHealthyTimeMs: 0 },
    ...extra,
  });

  it('changes nothing for the same spec, scales for replicas alone, and rolls out a new version otherwise', async () => {
    const node = await obedientNode('upd-a', 8);
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: spec('web') })).json()) as Job;
    expect(created).toMatchObject({ version: 1, rollout: { version: 1, from: 0, state: 'running' } });
    await rolledOut(created.id, 1);

    const sent = node.commands.length;
    const same = await put(created.id, spec('web'));
    expect(same.status).toBe(200);
    expect(((await same.json()) as Rolled).change).toEqual({ action: 'none', changed: [] });
    const scaled = (await (await put(created.id, spec('web', { replicas: 3 }))).json()) as Rolled;
    expect(scaled).toMatchObject({ version: 1, change: { action: 'scale', changed: ['replicas'] } });
    expect(scaled.instances).toHaveLength(3);
    // Only the update policy changed: a new version, and not one command to any node.
    await waitFor(() => node.commands.length === sent + 1, 'the deploy of the third');
    const policy = (await (
      await put(created.id, spec('web', { replicas: 3, update: { minHealthyTimeMs: 0, maxParallel: 2 } }))
    ).json()) as Rolled;
    expect(policy).toMatchObject({ version: 2, change: { action: 'in-place', changed: ['update'] } });
    await rolledOut(created.id, 2);
    expect(node.commands.length).toBe(sent + 1);

    // A new env is a roll-out: two at a time, a new instance before an old one stops.
    const env = { replicas: 3, env: { MODE: 'blue' }, update: { minHealthyTimeMs: 0, maxParallel: 2 } };
    const rolling = (await (await put(created.id, spec('web', env))).json()) as Rolled;
    expect(rolling).toMatchObject({ version: 3, change: { action: 'rollout', changed: ['env'] } });
    const done = await rolledOut(created.id, 3);
    expect(done.instances.map((instance) => [instance.version, instance.status])).toEqual([
      [3, 'running'],
      [3, 'running'],
      [3, 'running'],
    ]);
    const update = node.commands.slice(sent + 1);
    const firstDelete = update.findIndex((command) => command.command === 'delete');
    expect(update.slice(0, firstDelete).filter((command) => command.command === 'deploy')).toHaveLength(2);
    expect(
      update.filter((command) => command.command === 'deploy').map((command) => command.job.env),
    ).toEqual([{ MODE: 'blue' }, { MODE: 'blue' }, { MODE: 'blue' }]);
    const versions = (await (await cm.api(`/api/jobs/${created.id}/versions`)).json()) as JobVersion[];
    expect(versions.map((version) => [version.version, version.stable])).toEqual([
      [3, true],
      [2, true],
      [1, true],
    ]);
  });

  it('refuses a renamed, malformed or unknown update with a clear error and changes nothing', async () => {
    await obedientNode('upd-b');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: spec('keep') })).json()) as Job;
    const renamed = await put(created.id, spec('other'));
    expect(renamed.status).toBe(400);
    expect(JSON.stringify(await renamed.json())).toContain('cannot change');
    expect((await put(created.id, { ...spec('keep'), replicas: -1 })).status).toBe(400);
    expect((await put(created.id, { ...spec('keep'), update: { maxParallel: 0 } })).status).toBe(400);
    expect((await put(created.id, { ...spec('keep'), health: { intervalMs: 1000 } })).status).toBe(400);
    expect((await put('no-such-job', spec('no-such-job'))).status).toBe(404);
    const text = await cm.api(`/api/jobs/${created.id}`, {
      method: 'PUT',
      body: 'name: keep',
      headers: { 'content-type': 'text/plain' },
    });
    expect(text.status).toBe(415);
    const after = await getJob(created.id);
    expect(after.version).toBe(1);
    expect(after.replicas).toBe(2);
    await cm.api(`/api/jobs/${created.id}`, { method: 'DELETE' });
    expect((await put(created.id, spec('keep'))).status).toBe(409);
  });

  it('says what an update would do with dryRun, and does none of it', async () => {
    await obedientNode('upd-c');
    const created = (await (await cm.api('/api/jobs', { method: 'POST', json: spec('dry') })).json()) as Job;
    await rolledOut(created.id, 1);
    const plan = await put(created.id, spec('dry', { image: 'edge/busybox:v2' }), '?dryRun=true');
    expect(plan.status).toBe(200);
    expect(await plan.json()).toMatchObject({
      dryRun: true,
      name: 'dry',
      update: { action: 'rollout', changed: ['image'], version: 2, replaced: 2 },
      instances: [{ node: 'upd-c' }],
    });
    expect((await getJob(created.id)).version).toBe(1);
  });

  it('stops an old instance first where no node has room for both, and only then', async () => {
    // Room for two instances of one CPU each, and no more: a make-before-break is impossible.
    await obedientNode('upd-tight', 2);
    const created = (await (
      await cm.api('/api/jobs', { method: 'POST', json: spec('tight') })
    ).json()) as Job;
    await rolledOut(created.id, 1);
    await put(created.id, spec('tight', { env: { V: '2' } }));
    const done = await rolledOut(created.id, 2);
    expect(done.instances.map((instance) => instance.version)).toEqual([2, 2]);
    const events = (await (await cm.api(`/api/events?job=${created.id}&type=rollout.room`)).json()) as {
      message: string;
    }[];
    expect(events.length).toBe(2);
    expect(events[0]!.message).toMatch(/stopped first to make room/);
  });

  it('follows a roll-out across a restart of the cluster manager', async () => {
    const node = await obedientNode('upd-d');
    const created = (await (
      await cm.api('/api/jobs', { method: 'POST', json: spec('restart') })
    ).json()) as Job;
    await rolledOut(created.id, 1);
    // Long enough to restart in the middle of it.
    await put(created.id, spec('restart', { env: { V: '2' }, update: { minHealthyTimeMs: 3000 } }));
    await waitFor(
      async () => (await getJob(created.id)).instances.some((instance) => instance.version === 2),
      'a new instance',
    );
    await Promise.all(nodes.splice(0).map((each) => each.close()));
    await cm.stop({ keepData: true });
    cm = await startClusterManager({ dataDir: cm.dataDir });
    const back = await ObedientNode.join(cm, 'upd-d', {
      auth: { nodeId: node.nodeId, nodeSecret: node.node.ack!.nodeSecret },
    });
    nodes.push(back);
    // What ran before the restart is said again by the node, as a node engine lists it in telemetry.
    const before = await getJob(created.id);
    await back.node.sendTelemetry(
      before.instances.map((instance) => ({
        job: created.id,
        instance: instance.number,
        generation: instance.generation,
        status: 'running' as const,
      })),
    );
    const done = await rolledOut(created.id, 2);
    expect(done.instances.map((instance) => instance.version)).toEqual([2, 2]);
  });

  it('applies idempotently with edgectl, lists versions and rolls back', async () => {
    await obedientNode('upd-e');
    const edgectl = edgectlFor(cm);
    const path = join(dir, 'applied.json');
    writeFileSync(path, JSON.stringify(spec('applied')));
    const created = await edgectl(['apply', '-f', path, '--wait', '--timeout', '20s']);
    expect({ code: created.code, stderr: created.stderr }).toEqual({ code: 0, stderr: '' });
    expect(created.stdout).toMatch(/^created job applied/);
    expect(created.stdout).toContain('job applied: version 1 rolled out');
    const again = await edgectl(['apply', '-f', path]);
    expect(again.stdout.trim()).toBe('job applied unchanged (version 1)');
    writeFileSync(path, JSON.stringify(spec('applied', { env: { V: '2' } })));
    const planned = await edgectl(['plan', '-f', path]);
    expect(planned.stdout).toContain('applied: version 2 (env changed), rolling out: 2 instance(s) replaced');
    const updated = await edgectl(['apply', '-f', path, '--wait', '--timeout', '20s']);
    expect(updated.stderr).toBe('');
    expect(updated.code).toBe(0);
    expect(updated.stdout).toContain('job applied updated to version 2 (env changed): rolling out');
    expect(updated.stdout).toContain('job applied: version 2 rolled out');
    const versions = await edgectl(['versions', 'applied']);
    expect(versions.stdout.split('\n')[0]).toMatch(/^VERSION\s+CREATED\s+STABLE\s+IMAGE/);
    expect(versions.stdout).toMatch(/2 \(current\)\s+\S+\s+yes/);
    const back = await edgectl(['rollback', 'applied', '--wait', '--timeout', '20s']);
    expect(back.stderr).toBe('');
    expect(back.code).toBe(0);
    expect(back.stdout).toContain('updated to version 3 (env changed): rolling out (back to version 1)');
    const job = await getJob('applied');
    expect(job.env).toEqual({});
    const none = await edgectl(['rollback', 'applied', '--to-version', '9']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('has no version 9');
  });
});
