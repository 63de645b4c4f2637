import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changedFields, runsTheSame } from '../../cluster-manager/jobs/spec-changes.js';
import { probeCommand, probeHttp } from '../../node-engine/runtimes/health-probes.js';
import { JobSpecSchema } from '../../shared/index.js';

/** The node engine's health probes, with real processes and a real HTTP server on loopback. */
describe('health probes', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/slow') return; // never answers
      res.statusCode = req.url === '/ok' ? 200 : req.url === '/moved' ? 302 : 503;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('passes an HTTP check on 2xx and 3xx, and says why it fails otherwise', async () => {
    expect(await probeHttp('127.0.0.1', port, '/ok', 1000)).toBeNull();
    expect(await probeHttp('127.0.0.1', port, '/moved', 1000)).toBeNull();
    expect(await probeHttp('127.0.0.1', port, '/down', 1000)).toBe(
      `GET http://127.0.0.1:${port}/down answered 503`,
    );
    expect(await probeHttp('127.0.0.1', port, '/slow', 200)).toMatch(/no answer within 200 ms/);
    server.closeAllConnections();
  });

  it('says so when nothing listens', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const free = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    expect(await probeHttp('127.0.0.1', free, '/', 1000)).toBe(`GET http://127.0.0.1:${free}/: ECONNREFUSED`);
  });

  it('passes a command that exits 0, and gives the exit code and last line of one that does not', async () => {
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', GREETING: 'hello' };
    expect(await probeCommand(['sh', '-c', 'test "$GREETING" = hello'], { env, timeoutMs: 2000 })).toBeNull();
    expect(
      await probeCommand(['sh', '-c', 'echo starting; echo "not ready yet" >&2; exit 3'], {
        env,
        timeoutMs: 2000,
      }),
    ).toBe('exit 3: not ready yet');
    expect(await probeCommand(['sleep', '5'], { env, timeoutMs: 200 })).toBe('no answer within 200 ms');
    expect(await probeCommand(['/no/such/check'], { env, timeoutMs: 1000 })).toMatch(
      /cannot run \/no\/such\/check/,
    );
  });
});

describe('spec changes', () => {
  const spec = (extra: Record<string, unknown> = {}) =>
    JobSpecSchema.parse({ name: 'web', image: 'edge/busybox:latest', ...extra });

  it('names the fields that differ, whatever order keys came in', () => {
    expect(changedFields(spec({ env: { A: '1', B: '2' } }), spec({ env: { B: '2', A: '1' } }))).toEqual([]);
    expect(changedFields(spec(), spec({ image: 'other', replicas: 3 }))).toEqual(['image', 'replicas']);
    expect(changedFields(spec(), spec({ update: { maxParallel: 2 } }))).toEqual(['update']);
  });

  it('tells what changes running instances from what only the cluster manager acts on', () => {
    expect(runsTheSame(spec(), spec({ replicas: 5, update: {}, reschedule: { attempts: 0 } }))).toBe(true);
    expect(runsTheSame(spec(), spec({ disconnect: { replaceAfterMs: 1000 } }))).toBe(true);
    for (const change of [
      { image: 'other' },
      { env: { A: '1' } },
      { resources: { cpus: 1 } },
      { health: { command: ['true'] } },
      { constraints: { arch: ['arm64'] } },
    ])
      expect(runsTheSame(spec(), spec(change))).toBe(false);
  });
});
