import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  formatAge,
  formatApiError,
  formatEventsTable,
  formatInstanceCounts,
  formatJobsTable,
  formatNodesTable,
  formatPercent,
  formatTable,
  formatTimestamp,
  formatYaml,
} from '../../cluster-manager/cli/format.js';
import { defaultInstance, parseInstanceRef, parseLabelChanges } from '../../cluster-manager/cli/program.js';
import type { ClusterEvent, Job, NodeView } from '../../shared/index.js';
import { runEdgectlHere } from '../helpers/edgectl.js';

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5);

function nodeView(name: string, overrides: Partial<NodeView> = {}): NodeView {
  return {
    id: `id-${name}`,
    name,
    status: 'online',
    address: '10.0.0.1',
    arch: 'amd64',
    os: 'Debian 12',
    runtimes: ['docker', 'native'],
    labels: {},
    operatorLabels: {},
    cordoned: false,
    draining: false,
    capacity: { cpus: 4, memoryBytes: 4 * 1024 ** 3, gpus: [] },
    allocated: { cpus: 0, memoryBytes: 0, gpus: 0 },
    usage: { cpuPercent: 12.4, memoryPercent: 56.6, diskPercent: 10 },
    sensors: [],
    overlay: false,
    version: '0.1.0',
    registeredAt: NOW - 60_000,
    lastSeen: NOW - 3_000,
    ...overrides,
  };
}

function jobView(name: string, overrides: Partial<Job> = {}): Job {
  return {
    id: `job-${name}`,
    name,
    image: 'edge/busybox:latest',
    technology: 'docker',
    env: {},
    ports: [],
    resources: { gpus: 0 },
    replicas: 2,
    restart: { policy: 'always', maxRetries: 5 },
    devices: [],
    disconnect: { replaceAfterMs: 0 },
    reschedule: { attempts: 3, intervalMs: 3_600_000, delayMs: 5000, maxDelayMs: 300_000 },
    constraints: {},
    version: 1,
    state: 'active',
    createdAt: NOW,
    updatedAt: NOW,
    instances: [
      {
        number: 0,
        nodeId: 'id-edge-a',
        nodeName: 'edge-a',
        status: 'running',
        detail: '',
        containerId: 'c0',
        generation: 1,
        restarts: 0,
        version: 1,
        updatedAt: NOW,
      },
      {
        number: 1,
        nodeId: null,
        nodeName: null,
        status: 'pending',
        detail: 'no node fits: edge-b: offline',
        containerId: null,
        generation: 0,
        restarts: 0,
        version: 1,
        updatedAt: NOW,
      },
    ],
    instanceCounts: { running: 1, pending: 1 },
    ...overrides,
  };
}

describe('formatting', () => {
  it('aligns table columns three spaces apart without trailing blanks', () => {
    expect(
      formatTable(
        ['NAME', 'ID'],
        [
          ['a', '1'],
          ['longer-name', ''],
        ],
      ),
    ).toBe(['NAME          ID', 'a             1', 'longer-name'].join('\n'));
  });

  it('prints the nodes table', () => {
    const nodes = [
      nodeView('edge-a'),
      nodeView('edge-b', {
        status: 'offline',
        arch: 'arm64',
        runtimes: ['docker'],
        usage: { cpuPercent: null, memoryPercent: null, diskPercent: null },
        lastSeen: null,
      }),
      nodeView('edge-c', { cordoned: true }),
    ];
    expect(formatNodesTable(nodes, NOW)).toBe(
      [
        'NAME     ID          STATUS            ARCH    CPU%   MEM%   RUNTIMES        LAST-SEEN',
        'edge-a   id-edge-a   online            amd64   12%    57%    docker,native   3s ago',
        'edge-b   id-edge-b   offline           arm64   -      -      docker          never',
        'edge-c   id-edge-c   online,cordoned   amd64   12%    57%    docker,native   3s ago',
      ].join('\n'),
    );
  });

  it('reads label changes as kubectl writes them', () => {
    expect(parseLabelChanges(['zone=north', 'rack-', 'empty=', 'a=b=c'])).toEqual({
      zone: 'north',
      rack: null,
      empty: '',
      a: 'b=c',
    });
    for (const bad of ['zone', '-', '=x']) expect(() => parseLabelChanges([bad])).toThrow(/key=value/);
  });

  it('reads <job>#<n> as a job and an instance number, none when none is given', () => {
    expect(parseInstanceRef('web')).toEqual({ job: 'web' });
    expect(parseInstanceRef('web#12')).toEqual({ job: 'web', instance: 12 });
    expect(parseInstanceRef('5f0c-7a#1')).toEqual({ job: '5f0c-7a', instance: 1 });
    for (const bad of ['web#', '#1', 'web#x', 'web#-1', 'web#1.5'])
      expect(() => parseInstanceRef(bad), bad).toThrow(/<job>#<instance number>/);
  });

  it('reads the logs of the lowest-numbered running instance when no number is given', () => {
    const rolled = jobView('web');
    const [first, second] = rolled.instances;
    // After a roll-out the numbers are no longer 0 and 1: #4 waits, #3 runs.
    const instances = [
      { ...first!, number: 4, status: 'pending' as const, nodeId: null },
      { ...second!, number: 3, status: 'running' as const, nodeId: 'id-edge-a' },
    ];
    expect(defaultInstance({ ...rolled, instances })).toBe(3);
    expect(
      defaultInstance({
        ...rolled,
        instances: [{ ...second!, number: 5, status: 'scheduled', nodeId: 'n' }],
      }),
    ).toBe(5);
    expect(() => defaultInstance({ ...rolled, instances: [] })).toThrow(/no instance on a node yet/);
  });

  it('prints the jobs table with instance counts', () => {
    const jobs = [jobView('web'), jobView('gone', { state: 'deleting', instanceCounts: {} })];
    expect(formatJobsTable(jobs)).toBe(
      [
        'NAME   ID         STATE      INSTANCES',
        'web    job-web    active     1/2 running, 1 pending',
        'gone   job-gone   deleting   0',
      ].join('\n'),
    );
  });

  it('counts instances with running first, then the other statuses in order', () => {
    expect(formatInstanceCounts({ running: 3 })).toBe('3/3 running');
    expect(formatInstanceCounts({ pending: 2, failed: 1, running: 0 })).toBe(
      '0/3 running, 1 failed, 2 pending',
    );
    expect(formatInstanceCounts(undefined)).toBe('0');
  });

  it('prints events newest first as given, in UTC', () => {
    const events: ClusterEvent[] = [
      { id: 2, ts: NOW, type: 'job.created', message: 'job web created', jobId: 'job-web' },
      { id: 1, ts: NOW - 61_000, type: 'node.registered', message: 'node edge-a registered' },
    ];
    expect(formatEventsTable(events)).toBe(
      [
        'TIME                   TYPE              MESSAGE',
        '2025-01-02T03:04:05Z   job.created       job web created',
        '2025-01-02T03:03:04Z   node.registered   node edge-a registered',
      ].join('\n'),
    );
  });

  it('writes ages, percentages and timestamps for people', () => {
    expect(formatAge(NOW - 4_000, NOW)).toBe('4s ago');
    expect(formatAge(NOW - 5 * 60_000, NOW)).toBe('5m ago');
    expect(formatAge(NOW - 3 * 3_600_000, NOW)).toBe('3h ago');
    expect(formatAge(NOW - 3 * 86_400_000, NOW)).toBe('3d ago');
    expect(formatAge(NOW + 1_000, NOW)).toBe('0s ago');
    expect(formatAge(null, NOW)).toBe('never');
    expect(formatPercent(99.5)).toBe('100%');
    expect(formatPercent(null)).toBe('-');
    expect(formatTimestamp(0)).toBe('1970-01-01T00:00:00Z');
  });

  it('writes a job as YAML, instances included', () => {
    const yaml = formatYaml(jobView('web'));
    expect(yaml).toContain('name: web\n');
    expect(yaml).toContain('detail: "no node fits: edge-b: offline"');
    expect(parseYaml(yaml)).toEqual(jobView('web'));
  });

  it('prints the API error and each bad field', () => {
    expect(
      formatApiError(
        {
          code: 'invalid',
          message: 'invalid job spec',
          details: [
            { path: 'name', message: 'a lowercase DNS label' },
            { path: 'resources.cpus', message: 'Too small' },
          ],
        },
        400,
      ),
    ).toBe(
      [
        'error: invalid job spec (HTTP 400)',
        '  name: a lowercase DNS label',
        '  resources.cpus: Too small',
      ].join('\n'),
    );
  });
});

interface Recorded {
  method: string;
  url: string;
  authorization?: string;
  body?: unknown;
}

/** A stand-in for the cluster manager's HTTP API: a real server on loopback, with canned answers. */
function startFakeApi(): Promise<{ server: Server; url: string; requests: Recorded[] }> {
  const requests: Recorded[] = [];
  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const handle = (req: IncomingMessage, res: ServerResponse, text: string) => {
    const body = text ? JSON.parse(text) : undefined;
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      authorization: req.headers.authorization,
      body,
    });
    const route = `${req.method} ${req.url}`;
    if (route === 'GET /api/health') return send(res, 200, { status: 'ok', version: '0.1.0' });
    if (req.headers.authorization !== 'Bearer secret') {
      return send(res, 401, {
        error: { code: 'unauthorized', message: 'missing or wrong API token', details: [] },
      });
    }
    if (route === 'GET /api/nodes') return send(res, 200, [nodeView('edge-a')]);
    if (route === 'GET /api/nodes/edge-a') return send(res, 200, nodeView('edge-a'));
    if (route === 'GET /api/jobs') return send(res, 200, [jobView('web')]);
    if (route === 'GET /api/jobs/web') return send(res, 200, jobView('web'));
    if (route === 'GET /api/jobs/nope') {
      return send(res, 404, { error: { code: 'not_found', message: 'no job nope', details: [] } });
    }
    if (route === 'POST /api/jobs') {
      if (body?.name === 'Bad') {
        return send(res, 400, {
          error: {
            code: 'invalid_input',
            message: 'invalid job spec',
            details: [{ path: 'name', message: 'a lowercase DNS label' }],
          },
        });
      }
      return send(res, 201, jobView(body.name));
    }
    if (route === 'DELETE /api/jobs/web') return send(res, 202, { ...jobView('web'), state: 'deleting' });
    if (route === 'POST /api/jobs/web/move' || route === 'POST /api/jobs/web/replicate')
      return send(res, 202, {});
    if (route.startsWith('GET /api/events')) {
      return send(res, 200, [{ id: 1, ts: NOW, type: 'job.created', message: 'job web created' }]);
    }
    if (route.startsWith('GET /api/jobs/web/instances/')) {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      return res.end('line one\nline twö\n');
    }
    if (route === 'GET /api/teapot') return res.writeHead(418).end('short and stout');
    send(res, 404, { error: { code: 'not_found', message: `no route ${route}`, details: [] } });
  };
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => {
      text += chunk;
    });
    req.on('end', () => handle(req, res, text));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({ server, url: `http://127.0.0.1:${port}`, requests });
    });
  });
}

describe('edgectl against an HTTP API', () => {
  let api: Awaited<ReturnType<typeof startFakeApi>>;
  let dir: string;

  beforeAll(async () => {
    api = await startFakeApi();
    dir = mkdtempSync(join(tmpdir(), 'edgectl-'));
  });

  afterAll(async () => {
    await new Promise((resolve) => api.server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs edgectl in-process with the server and token in env vars, as an operator's shell would. */
  function edgectl(argv: string[], options: { env?: NodeJS.ProcessEnv; stdin?: string } = {}) {
    return runEdgectlHere(argv, {
      env: options.env ?? { EDGE_SERVER: api.url, EDGE_API_TOKEN: 'secret' },
      stdin: options.stdin,
      now: () => NOW,
    });
  }

  it('lists nodes as a table, with the token as a bearer header', async () => {
    const result = await edgectl(['nodes']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout.split('\n')[0]).toMatch(
      /^NAME\s+ID\s+STATUS\s+ARCH\s+CPU%\s+MEM%\s+RUNTIMES\s+LAST-SEEN$/,
    );
    expect(result.stdout).toContain('edge-a');
    expect(api.requests.at(-1)).toMatchObject({
      method: 'GET',
      url: '/api/nodes',
      authorization: 'Bearer secret',
    });
  });

  it('prints what the API returned with -o json and -o yaml', async () => {
    const json = await edgectl(['jobs', '-o', 'json']);
    expect(JSON.parse(json.stdout)).toEqual([jobView('web')]);
    const yaml = await edgectl(['job', 'web']);
    expect(parseYaml(yaml.stdout)).toEqual(jobView('web'));
    const node = await edgectl(['node', 'edge-a', '--output', 'json']);
    expect(JSON.parse(node.stdout)).toEqual(nodeView('edge-a'));
    const events = await edgectl(['events', '--limit', '5']);
    expect(events.stdout).toContain('job web created');
    expect(api.requests.at(-1)?.url).toBe('/api/events?limit=5');
  });

  it('takes --server and --token over the env vars', async () => {
    const result = await edgectl(['--server', api.url, '--token', 'secret', 'jobs'], {
      env: { EDGE_SERVER: 'http://127.0.0.1:1', EDGE_API_TOKEN: 'wrong' },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('1/2 running, 1 pending');
  });

  it('deploys a YAML file and prints the new job id and name', async () => {
    const file = join(dir, 'job.yaml');
    writeFileSync(file, 'name: web\nimage: edge/busybox:latest\nreplicas: 2\n');
    const result = await edgectl(['deploy', '-f', file]);
    // Where each instance went, or why it waits, as the answer says.
    expect(result).toEqual({
      code: 0,
      stdout:
        'created job web (id job-web)\nweb#0 running on edge-a\nweb#1 pending (no node fits: edge-b: offline)\n',
      stderr: '',
    });
    expect(api.requests.at(-1)).toMatchObject({
      method: 'POST',
      url: '/api/jobs',
      body: { name: 'web', image: 'edge/busybox:latest', replicas: 2 },
    });
  });

  it('deploys JSON from stdin', async () => {
    const result = await edgectl(['deploy', '-f', '-'], {
      stdin: '{"name":"cam","image":"edge/busybox:latest"}',
    });
    expect(result.stdout.split('\n')[0]).toBe('created job cam (id job-cam)');
  });

  it('prints the API message and each bad field, and exits 1', async () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ name: 'Bad', image: 'x' }));
    const result = await edgectl(['deploy', '-f', file]);
    expect(result).toEqual({
      code: 1,
      stdout: '',
      stderr: 'error: invalid job spec (HTTP 400)\n  name: a lowercase DNS label\n',
    });
    const missing = await edgectl(['job', 'nope']);
    expect(missing).toMatchObject({ code: 1, stderr: 'error: no job nope (HTTP 404)\n' });
  });

  it('explains a missing or wrong token', async () => {
    const result = await edgectl(['nodes'], { env: { EDGE_SERVER: api.url, EDGE_API_TOKEN: 'wrong' } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: missing or wrong API token \(HTTP 401\)\nhint: pass --token/);
  });

  it('refuses an unreadable or malformed job file with one line', async () => {
    const missing = await edgectl(['deploy', '-f', join(dir, 'nope.yaml')]);
    expect(missing).toMatchObject({
      code: 1,
      stderr: `edgectl: cannot read ${join(dir, 'nope.yaml')}: no such file\n`,
    });
    const list = await edgectl(['deploy', '-f', '-'], { stdin: '- a\n- b\n' });
    expect(list.code).toBe(1);
    expect(list.stderr).toMatch(/^edgectl: stdin must hold one job spec/);
    const empty = await edgectl(['deploy', '-f', '-'], { stdin: '\n' });
    expect(empty.stderr).toBe('edgectl: stdin is empty: expected a job spec in YAML or JSON\n');
    const broken = await edgectl(['deploy', '-f', '-'], { stdin: 'name: [unclosed' });
    expect(broken.stderr).toMatch(/^edgectl: stdin is neither YAML nor JSON/);
  });

  it("asks for an instance's output with what was given, and prints it as it comes", async () => {
    const result = await edgectl([
      'logs',
      'web#2',
      '-f',
      '--tail',
      '5',
      '--since',
      '10m',
      '--stream',
      'stderr',
    ]);
    expect(result).toEqual({ code: 0, stdout: 'line one\nline twö\n', stderr: '' });
    expect(api.requests.at(-1)).toMatchObject({
      method: 'GET',
      url: '/api/jobs/web/instances/2/logs?follow=true&tail=5&since=10m&stream=stderr',
      authorization: 'Bearer secret',
    });
    // Instance 0 unless named.
    await edgectl(['logs', 'web']);
    expect(api.requests.at(-1)?.url).toBe('/api/jobs/web/instances/0/logs');
    await edgectl(['logs', 'web', '--tail', 'all']);
    expect(api.requests.at(-1)?.url).toBe('/api/jobs/web/instances/0/logs?tail=all');
    await edgectl(['logs', 'web', '--since', '2025-01-02T03:04:05Z']);
    expect(api.requests.at(-1)?.url).toBe('/api/jobs/web/instances/0/logs?since=2025-01-02T03%3A04%3A05Z');
    const sent = api.requests.length;
    for (const argv of [
      ['logs', 'web', '--tail', 'x'],
      ['logs', 'web', '--since', 'yesterday'],
      ['logs', 'web', '--stream', 'stdin'],
      ['logs', 'web#'],
      ['logs', '#1'],
      ['logs', 'web#-1'],
    ]) {
      const refused = await edgectl(argv);
      expect(refused.code, argv.join(' ')).toBe(2);
      expect(refused.stderr).toMatch(/^edgectl: [^\n]+\n$/);
    }
    expect(api.requests.length).toBe(sent);
    expect(await edgectl(['logs', 'nope'])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('HTTP 404'),
    });
  });

  it('posts moves, scales and deletes', async () => {
    expect((await edgectl(['move', 'web', '--instance', '1', '--to', 'edge-b'])).stdout).toBe(
      'moving instance 1 of web to edge-b\n',
    );
    expect(api.requests.at(-1)).toMatchObject({
      url: '/api/jobs/web/move',
      body: { instance: 1, to: 'edge-b' },
    });
    await edgectl(['move', 'web', '--instance', '0']);
    expect(api.requests.at(-1)?.body).toEqual({ instance: 0 });
    expect((await edgectl(['scale', 'web', '3'])).stdout).toBe('scaling job web to 3 replicas\n');
    expect(api.requests.at(-1)).toMatchObject({ url: '/api/jobs/web/replicate', body: { replicas: 3 } });
    expect((await edgectl(['delete', 'web'])).stdout).toBe('deleting job web\n');
    expect(api.requests.at(-1)).toMatchObject({ method: 'DELETE', url: '/api/jobs/web' });
  });

  it('reports health without a token', async () => {
    const result = await edgectl(['health'], { env: { EDGE_SERVER: api.url } });
    expect(result.stdout).toBe('ok (version 0.1.0)\n');
  });

  it('says in one line when the server cannot be reached, and exits 1', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise((resolve) => closed.close(resolve));
    const result = await edgectl(['--server', `http://127.0.0.1:${port}`, 'nodes']);
    expect(result).toEqual({
      code: 1,
      stdout: '',
      stderr: `edgectl: cannot reach the cluster manager at http://127.0.0.1:${port}: connection refused (ECONNREFUSED)\n`,
    });
  });

  it.each([
    [['--bogus'], /unknown option '--bogus'/],
    [['nodes', '--bogus'], /unknown option '--bogus'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['scale', 'web', 'many'], /must be a whole number/],
    [['move', 'web'], /required option '--instance <number>' not specified/],
    [['move', 'web', '--instance', '-1'], /must be a whole number/],
    [['events', '--limit', '0'], /must be at least 1/],
    [['jobs', '-o', 'xml'], /Allowed choices are table, yaml, json/],
    [['deploy'], /required option '-f, --file <path>'/],
    [['--server', 'ftp://x', 'nodes'], /not an http\(s\) URL/],
  ])('exits 2 on the bad arguments %j with one line', async (argv, message) => {
    const sent = api.requests.length;
    const result = await edgectl(argv);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).toMatch(/^edgectl: [^\n]+\n$/);
    expect(api.requests.length).toBe(sent);
  });

  it('exits 2 when EDGE_SERVER is not a URL', async () => {
    const result = await edgectl(['nodes'], { env: { EDGE_SERVER: 'nowhere' } });
    expect(result).toEqual({ code: 2, stdout: '', stderr: 'edgectl: EDGE_SERVER: not a URL: nowhere\n' });
  });

  it('prints a bash completion script that bash completes commands, actions and flags with', async () => {
    const script = await edgectl(['completion', 'bash']);
    expect(script.code).toBe(0);
    const complete = (...words: string[]) =>
      spawnSync(
        'bash',
        [
          '-c',
          `eval "$(cat)"; COMP_WORDS=(edgectl ${words.map((w) => `'${w}'`).join(' ')}); ` +
            `COMP_CWORD=${words.length}; _edgectl; echo "\${COMPREPLY[*]}"`,
        ],
        { input: script.stdout, encoding: 'utf8' },
      ).stdout.trim();
    expect(complete('no')).toBe('nodes node');
    expect(complete('node', 'c')).toBe('cordon');
    expect(complete('--server', 'x', 'tok')).toBe('token');
    expect(complete('nodes', '--st')).toBe('--status');
    expect(complete('lo')).toBe('logs');
    expect(complete('logs', '--')).toBe('--follow --tail --since --stream');
    expect((await edgectl(['completion', 'zsh'])).code).toBe(2);
  });

  it('exits 0 on --help and --version', async () => {
    const help = await edgectl(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: edgectl');
    expect((await edgectl(['--version'])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
});

describe('the built edgectl program', () => {
  const built = join('dist', 'cluster-manager', 'cli', 'edgectl.js');

  beforeAll(() => {
    // Build when the compiled program is missing or older than its sources (`npm test` builds first).
    const sources = readdirSync(join('cluster-manager', 'cli')).map((file) =>
      join('cluster-manager', 'cli', file),
    );
    const stale = (() => {
      try {
        const builtAt = statSync(built).mtimeMs;
        return sources.some((source) => statSync(source).mtimeMs > builtAt);
      } catch {
        return true;
      }
    })();
    if (stale) spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'ignore' });
  });

  it('exits 2 with one line on a bad flag', () => {
    const result = spawnSync(process.execPath, [built, '--bogus'], { encoding: 'utf8' });
    expect(result.status).toBe(2);
    expect(result.stderr).toBe("edgectl: unknown option '--bogus'\n");
  });

  it('exits 1 with one line when the server is unreachable', () => {
    const result = spawnSync(process.execPath, [built, 'nodes'], {
      encoding: 'utf8',
      env: { ...process.env, EDGE_SERVER: 'http://127.0.0.1:1', EDGE_API_TOKEN: 'x' },
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^edgectl: cannot reach the cluster manager at http:\/\/127\.0\.0\.1:1: .+\n$/,
    );
  });
});
