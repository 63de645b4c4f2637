import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningClusterManager, startClusterManager } from '../helpers/cluster-manager.js';
import { edgectlFor } from '../helpers/edgectl.js';
import { TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait.js';

interface NodeBody {
  id: string;
  name: string;
  status: string;
  labels: Record<string, string>;
}

interface JobBody {
  id: string;
  name: string;
  state: string;
  createdAt: number;
  instances: { nodeId: string | null; nodeName: string | null }[];
}

interface Answer<T> {
  status: number;
  body: T;
  link: string | null;
  nextCursor: string | null;
}

const NODE_COUNT = 25;
const nameOf = (index: number) => `node-${String(index).padStart(2, '0')}`;
/** Even nodes are in zone a, odd ones in zone b; every third one is also tier=edge. */
const labelsOf = (index: number): Record<string, string> => ({
  zone: index % 2 === 0 ? 'a' : 'b',
  ...(index % 3 === 0 ? { tier: 'edge' } : {}),
});
/** Registered with MQTT, then cut: the broker publishes their last will and they go offline. */
const OFFLINE = ['node-04', 'node-13', 'node-22'];

describe('paged and filtered lists: GET /api/nodes and GET /api/jobs', () => {
  let cm: RunningClusterManager;
  const nodes: TestNode[] = [];

  async function join(name: string, labels: Record<string, string> = {}): Promise<TestNode> {
    const node = new TestNode(cm, TestNode.info(name, { labels }));
    nodes.push(node);
    await node.register({ token: cm.joinToken });
    return node;
  }

  async function get<T>(path: string): Promise<Answer<T>> {
    const res = await cm.api(path);
    return {
      status: res.status,
      body: (await res.json()) as T,
      link: res.headers.get('link'),
      nextCursor: res.headers.get('x-next-cursor'),
    };
  }

  /** Follows `Link: rel="next"` from `path` to the last page; checks both headers on every page. */
  async function walk<T>(path: string): Promise<T[][]> {
    const pages: T[][] = [];
    let next: string | undefined = path;
    while (next) {
      const answer: Answer<T[]> = await get<T[]>(next);
      expect(answer.status, next).toBe(200);
      pages.push(answer.body);
      if (answer.link === null) {
        expect(answer.nextCursor).toBeNull();
        break;
      }
      const target = /^<([^>]+)>; rel="next"$/.exec(answer.link)?.[1];
      expect(target, answer.link).toBeDefined();
      expect(new URL(target!, cm.url).searchParams.get('cursor')).toBe(answer.nextCursor);
      next = target;
    }
    return pages;
  }

  beforeAll(async () => {
    // A long node timeout: nodes that only registered (no MQTT) stay online for the whole file.
    cm = await startClusterManager({ nodeTimeoutMs: 600_000 });
    await Promise.all(Array.from({ length: NODE_COUNT }, (_, index) => join(nameOf(index), labelsOf(index))));
    for (const name of OFFLINE) {
      const node = nodes.find((candidate) => candidate.info.name === name)!;
      await node.connectMqtt();
      (node.mqtt as unknown as { stream: { destroy(): void } }).stream.destroy();
      node.socket?.close();
    }
    await waitFor(async () => {
      const all = (await get<NodeBody[]>('/api/nodes')).body;
      return all.filter((node) => node.status === 'offline').length === OFFLINE.length;
    }, 'the cut nodes offline');
    for (let index = 0; index < 12; index++) {
      const res = await cm.api('/api/jobs', {
        method: 'POST',
        json: { name: `job-${index}`, image: 'edge/busybox:latest', command: ['sleep', '3600'] },
      });
      expect(res.status).toBe(201);
    }
    // No node acks (none of the online ones has MQTT), so deleted jobs stay `deleting`.
    for (const name of ['job-1', 'job-5', 'job-9'])
      expect((await cm.api(`/api/jobs/${name}`, { method: 'DELETE' })).status).toBe(202);
  });

  afterAll(async () => {
    await Promise.all(nodes.filter((node) => !OFFLINE.includes(node.info.name)).map((node) => node.close()));
    await cm.stop();
  });

  it('answers the whole array without limit, by name, with no paging headers', async () => {
    const answer = await get<NodeBody[]>('/api/nodes');
    expect(answer.status).toBe(200);
    expect(answer.body.map((node) => node.name)).toEqual(
      Array.from({ length: NODE_COUNT }, (_, i) => nameOf(i)),
    );
    expect(answer.body[0]).toMatchObject({ status: 'online', labels: { zone: 'a', tier: 'edge' } });
    expect(answer.link).toBeNull();
    expect(answer.nextCursor).toBeNull();
  });

  it('walks 25 nodes with limit 10 in 3 pages, without duplicates or gaps', async () => {
    const pages = await walk<NodeBody>('/api/nodes?limit=10');
    expect(pages.map((page) => page.length)).toEqual([10, 10, 5]);
    expect(pages.flat().map((node) => node.name)).toEqual(
      Array.from({ length: NODE_COUNT }, (_, i) => nameOf(i)),
    );
    const first = await get<NodeBody[]>('/api/nodes?limit=10');
    expect(first.link).toBe(`</api/nodes?limit=10&cursor=${first.nextCursor}>; rel="next"`);
    const exact = await get<NodeBody[]>('/api/nodes?limit=25');
    expect(exact.body).toHaveLength(NODE_COUNT);
    expect(exact.link).toBeNull();
  });

  it('filters by status and by labels (all must match)', async () => {
    const offline = await get<NodeBody[]>('/api/nodes?status=offline');
    expect(offline.body.map((node) => node.name)).toEqual(OFFLINE);
    const online = await get<NodeBody[]>('/api/nodes?status=online');
    expect(online.body).toHaveLength(NODE_COUNT - OFFLINE.length);
    expect(online.body.every((node) => node.status === 'online')).toBe(true);
    const zoneA = await get<NodeBody[]>('/api/nodes?label=zone%3Da');
    expect(zoneA.body).toHaveLength(13);
    const both = await get<NodeBody[]>('/api/nodes?label=zone=a&label=tier=edge');
    expect(both.body.map((node) => node.name)).toEqual([
      'node-00',
      'node-06',
      'node-12',
      'node-18',
      'node-24',
    ]);
    expect((await get<NodeBody[]>('/api/nodes?label=zone=c')).body).toEqual([]);
    expect((await get<NodeBody[]>('/api/nodes?label=zone=')).body).toEqual([]);
  });

  it('pages a filtered list: the next link keeps the filters', async () => {
    const path = '/api/nodes?status=online&label=zone=a&limit=4';
    const first = await get<NodeBody[]>(path);
    expect(first.link).toBe(
      `</api/nodes?limit=4&cursor=${first.nextCursor}&status=online&label=zone%3Da>; rel="next"`,
    );
    const pages = await walk<NodeBody>(path);
    expect(pages.map((page) => page.length)).toEqual([4, 4, 3]);
    const expected = Array.from({ length: NODE_COUNT }, (_, i) => nameOf(i)).filter(
      (name, i) => i % 2 === 0 && !OFFLINE.includes(name),
    );
    expect(pages.flat().map((node) => node.name)).toEqual(expected);
  });

  it('pages jobs by creation time then id, and filters them by state and node', async () => {
    const all = await get<JobBody[]>('/api/jobs');
    expect(all.body).toHaveLength(12);
    expect(all.link).toBeNull();
    const sorted = [...all.body].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
    expect(all.body.map((job) => job.id)).toEqual(sorted.map((job) => job.id));

    const pages = await walk<JobBody>('/api/jobs?limit=5');
    expect(pages.map((page) => page.length)).toEqual([5, 5, 2]);
    expect(pages.flat().map((job) => job.id)).toEqual(all.body.map((job) => job.id));

    const deleting = await get<JobBody[]>('/api/jobs?state=deleting');
    expect(deleting.body.map((job) => job.name).sort()).toEqual(['job-1', 'job-5', 'job-9']);
    const active = await walk<JobBody>('/api/jobs?state=active&limit=4');
    expect(active.map((page) => page.length)).toEqual([4, 4, 1]);
    expect(active.flat().every((job) => job.state === 'active')).toBe(true);
    const first = await get<JobBody[]>('/api/jobs?state=active&limit=4');
    expect(first.link).toBe(`</api/jobs?limit=4&cursor=${first.nextCursor}&state=active>; rel="next"`);

    const placed = all.body.find((job) => job.instances[0]?.nodeName)!;
    const nodeName = placed.instances[0]!.nodeName!;
    const onNode = all.body.filter((job) => job.instances.some((instance) => instance.nodeName === nodeName));
    for (const ref of [nodeName, placed.instances[0]!.nodeId!]) {
      const byNode = await get<JobBody[]>(`/api/jobs?node=${ref}`);
      expect(byNode.body.map((job) => job.id)).toEqual(onNode.map((job) => job.id));
    }
  });

  it('answers 400 with the error shape for every bad parameter, and changes nothing', async () => {
    const cursor = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url');
    const before = (await get<NodeBody[]>('/api/nodes')).body;
    const bad: [string, string][] = [
      ['/api/nodes?limit=0', 'limit'],
      ['/api/nodes?limit=x', 'limit'],
      ['/api/nodes?limit=', 'limit'],
      ['/api/nodes?limit=1001', 'limit'],
      ['/api/nodes?limit=2.5', 'limit'],
      ['/api/nodes?limit=-1', 'limit'],
      ['/api/nodes?limit=5&limit=6', 'limit'],
      ['/api/nodes?status=sideways', 'status'],
      ['/api/nodes?status=online&status=offline', 'status'],
      ['/api/nodes?label=zone', 'label'],
      ['/api/nodes?label==a', 'label'],
      ['/api/nodes?cursor=', 'cursor'],
      ['/api/nodes?cursor=not*base64', 'cursor'],
      [`/api/nodes?cursor=${Buffer.from('not json').toString('base64url')}`, 'cursor'],
      [`/api/nodes?cursor=${cursor({ createdAt: 1, id: 'x' })}`, 'cursor'],
      ['/api/jobs?limit=0', 'limit'],
      ['/api/jobs?state=gone', 'state'],
      ['/api/jobs?node=', 'node'],
      ['/api/jobs?node=no-such-node', 'node'],
      [`/api/jobs?cursor=${cursor({ name: 'node-00', id: 'x' })}`, 'cursor'],
    ];
    for (const [path, parameter] of bad) {
      const answer = await get<{ error: { code: string; message: string; details: { path: string }[] } }>(
        path,
      );
      expect(answer.status, path).toBe(400);
      expect(answer.body, path).toEqual({
        error: {
          code: 'invalid_input',
          message: expect.any(String),
          details: [{ path: parameter, message: expect.any(String) }],
        },
      });
      expect(answer.link, path).toBeNull();
    }
    const several = await get<{ error: { details: { path: string }[] } }>(
      '/api/nodes?limit=x&status=up&label=zone',
    );
    expect(several.body.error.details.map((detail) => detail.path).sort()).toEqual([
      'label',
      'limit',
      'status',
    ]);
    expect((await get<NodeBody[]>('/api/nodes')).body).toEqual(before);
    expect((await get<NodeBody[]>('/api/nodes?unknown=1')).body).toEqual(before);
  });

  it('still answers GET /api/nodes/:id with its instances and their job names', async () => {
    const jobs = (await get<JobBody[]>('/api/jobs')).body;
    const placed = jobs.find((job) => job.instances[0]?.nodeId)!;
    const nodeId = placed.instances[0]!.nodeId!;
    const expected = jobs
      .filter((job) => job.instances.some((instance) => instance.nodeId === nodeId))
      .map((job) => job.name)
      .sort();
    for (const ref of [nodeId, placed.instances[0]!.nodeName!]) {
      const answer = await get<NodeBody & { instances: { job: string; jobName: string; nodeId: string }[] }>(
        `/api/nodes/${ref}`,
      );
      expect(answer.status).toBe(200);
      expect(answer.body.id).toBe(nodeId);
      expect(answer.body.instances.map((instance) => instance.jobName).sort()).toEqual(expected);
      for (const instance of answer.body.instances) {
        expect(instance.jobName).toBe(jobs.find((job) => job.id === instance.job)?.name);
        expect(instance.nodeId).toBe(nodeId);
      }
    }
  });

  it('edgectl nodes takes --status, --label, --limit and --cursor', async () => {
    const edgectl = edgectlFor(cm);
    const offline = await edgectl(['nodes', '--status', 'offline', '-o', 'json']);
    expect(offline).toMatchObject({ code: 0, stderr: '' });
    expect((JSON.parse(offline.stdout) as NodeBody[]).map((node) => node.name)).toEqual(OFFLINE);

    const labelled = await edgectl(['nodes', '--label', 'zone=a', '--label', 'tier=edge', '-o', 'json']);
    expect((JSON.parse(labelled.stdout) as NodeBody[]).map((node) => node.name)).toEqual([
      'node-00',
      'node-06',
      'node-12',
      'node-18',
      'node-24',
    ]);

    const first = await edgectl(['nodes', '--limit', '20', '-o', 'json']);
    expect(JSON.parse(first.stdout)).toHaveLength(20);
    const cursor = /--cursor (\S+)/.exec(first.stderr)?.[1];
    expect(cursor, first.stderr).toBeDefined();
    const second = await edgectl(['nodes', '--limit', '20', '--cursor', cursor!]);
    expect(second).toMatchObject({ code: 0, stderr: '' });
    expect(second.stdout).toContain('node-24');
    expect(second.stdout).not.toContain('node-19');

    expect((await edgectl(['nodes', '--status', 'sideways'])).code).toBe(2);
    expect((await edgectl(['nodes', '--label', 'zone'])).code).toBe(2);
    const tooMany = await edgectl(['nodes', '--limit', '5000']);
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toContain('limit: must be a whole number from 1 to 1000');
  });

  it('shows a node registered between pages exactly once when it sorts after the cursor', async () => {
    const first = await get<NodeBody[]>('/api/nodes?limit=10');
    expect(first.body.at(-1)?.name).toBe('node-09');
    await join('node-15b');
    await join('node-05b');
    const rest = (await walk<NodeBody>(`/api/nodes?limit=10&cursor=${first.nextCursor}`)).flat();
    const names = [...first.body, ...rest].map((node) => node.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names.filter((name) => name === 'node-15b')).toHaveLength(1);
    expect(names).not.toContain('node-05b');
    expect(rest.map((node) => node.name)).toEqual([
      ...Array.from({ length: 15 }, (_, i) => nameOf(i + 10)).flatMap((name) =>
        name === 'node-15' ? [name, 'node-15b'] : [name],
      ),
    ]);
    expect((await get<NodeBody[]>('/api/nodes')).body).toHaveLength(NODE_COUNT + 2);
  });
});
