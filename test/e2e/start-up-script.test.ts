import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { trustedFetch } from '../../shared/index.js';
import { runEdgectlHere } from '../helpers/edgectl.js';
import { freePort } from '../helpers/ports.js';
import {
  baseEnv,
  machineArch,
  PROJECT_DIR,
  pidAlive,
  pidsIn,
  runScript,
  stopStartUp,
} from '../helpers/start-up.js';

const USAGE_LINE = /usage: \.\/start-up\.sh <amd64\|arm64\|arm-7>/;

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** The source address towards the default route's gateway, asked of the kernel (a route lookup, nothing sent). */
function defaultRouteAddress(): string {
  const route = execFileSync('ip', ['-4', 'route', 'show', 'default'], { encoding: 'utf8' });
  const gateway = /\bvia (\S+)/.exec(route)?.[1];
  if (!gateway) throw new Error(`this test needs a default route through a gateway; got "${route.trim()}"`);
  const lookup = execFileSync('ip', ['-4', 'route', 'get', gateway], { encoding: 'utf8' });
  return /\bsrc (\S+)/.exec(lookup)![1]!;
}

describe('start-up.sh: arguments and environment', () => {
  let stateDir: string;
  let env: NodeJS.ProcessEnv;

  beforeEach(() => {
    // Its own state dir: `stop` here must never touch a cluster started from the project's var/.
    stateDir = mkdtempSync(join(tmpdir(), 'start-up-args-'));
    env = { ...baseEnv(stateDir), START_UP_STATE_DIR: stateDir };
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  it('rejects an unknown architecture with a usage line and exit 2', () => {
    const result = runScript(['sparc'], env);
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toMatch(USAGE_LINE);
  });

  it('exits 2 with a usage line when given no arguments', () => {
    const result = runScript([], env);
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toMatch(USAGE_LINE);
  });

  it('exits 2 on an unknown option', () => {
    const result = runScript([machineArch(), '--bogus'], env);
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toMatch(USAGE_LINE);
  });

  it('prints its help and exits 0 on --help', () => {
    const result = runScript(['--help'], env);
    expect(result.status, result.output_).toBe(0);
    expect(result.stdout).toMatch(USAGE_LINE);
  });

  it("exits 2 naming the machine's architecture when asked for another one", () => {
    const other = machineArch() === 'amd64' ? 'arm64' : 'amd64';
    const result = runScript([other], env);
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toContain(`./start-up.sh ${machineArch()}`);
  });

  it('says nothing runs and exits 0 on stop when nothing was started', () => {
    const result = runScript(['stop'], env);
    expect(result.status, result.output_).toBe(0);
    expect(result.stdout).toContain('nothing running');
  });

  it('exits 3 on status when nothing was started', () => {
    const result = runScript(['status'], env);
    expect(result.status, result.output_).toBe(3);
    expect(result.stdout).toContain('cluster-manager: not running');
  });

  it('exits 2 when only CLUSTER_MANAGER_URL is set', () => {
    const result = runScript([machineArch(), '-y'], {
      ...env,
      CLUSTER_MANAGER_URL: 'http://127.0.0.1:10100',
    });
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toContain('JOIN_TOKEN is not');
  });

  it('exits 2 on an ADVERTISE_ADDRESS other machines cannot reach', () => {
    for (const address of ['127.0.0.1', '0.0.0.0', 'somewhere', '10.0.0']) {
      const result = runScript([machineArch(), '-y'], { ...env, ADVERTISE_ADDRESS: address });
      expect(result.status, result.output_).toBe(2);
      expect(result.stderr).toContain(`ADVERTISE_ADDRESS=${address} is not an IPv4 address other machines`);
    }
  });

  it('exits 2 when only JOIN_TOKEN is set', () => {
    const result = runScript([machineArch(), '-y'], { ...env, JOIN_TOKEN: 'some-token' });
    expect(result.status, result.output_).toBe(2);
    expect(result.stderr).toContain('CLUSTER_MANAGER_URL is not');
  });
});

describe('start-up.sh: an all-in-one cluster', () => {
  const tempDir = mkdtempSync(join(tmpdir(), 'start-up-all-in-one-'));
  const stateDir = join(tempDir, 'state');
  const nodeName = `start-up-e2e-${process.pid}`;
  // Set from the start: even a skipped test's afterAll must stop only what lives in this state dir.
  const env: NodeJS.ProcessEnv = { ...baseEnv(tempDir), START_UP_STATE_DIR: stateDir };

  afterAll(() => {
    // Whatever the test left running (all ours: the state dir was made by this test).
    stopStartUp(env, stateDir);
    rmSync(tempDir, { recursive: true, force: true });
  });

  it('starts, registers its node, and stops every process it started', { timeout: 600_000 }, async () => {
    const [httpPort, mqttPort, nodePort] = [await freePort(), await freePort(), await freePort()];
    Object.assign(env, {
      CM_HTTP_PORT: String(httpPort),
      CM_MQTT_PORT: String(mqttPort),
      NE_PORT: String(nodePort),
      CM_DATA_DIR: join(tempDir, 'cluster-manager'),
      NE_DATA_DIR: join(tempDir, 'node-engine'),
      NM_DATA_DIR: join(tempDir, 'net-manager'),
      NODE_NAME: nodeName,
    });
    // The net manager would claim the machine's overlay TUN device and route, which other tests may hold.
    const started = runScript([machineArch(), '-y', '--no-net-manager'], env, 540_000);
    expect(started.status, started.output_).toBe(0);
    const apiToken = readFileSync(join(tempDir, 'cluster-manager', 'api-token'), 'utf8').trim();
    expect(started.stdout).toContain(`API token:  ${apiToken}`);
    const caFile = join(tempDir, 'cluster-manager', 'tls', 'ca.pem');
    expect(started.stdout).toContain(
      `curl -sS --cacert ${caFile} -X POST https://127.0.0.1:${httpPort}/api/jobs`,
    );
    // Other workers are told the address of the interface holding the default route, and a token that pins
    // the cluster CA.
    const fingerprint = createHash('sha256')
      .update(new X509Certificate(readFileSync(caFile)).raw)
      .digest('hex');
    expect(started.stdout).toContain(
      `CLUSTER_MANAGER_URL=https://${defaultRouteAddress()}:${httpPort} JOIN_TOKEN=E10${fingerprint}::`,
    );
    // No token on any command line of what it started (ps shows every user the arguments).
    const commandLines = pidsIn(stateDir).map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    expect(commandLines.length).toBeGreaterThan(0);
    const joinSecret = readFileSync(join(tempDir, 'cluster-manager', 'join-token'), 'utf8').trim();
    for (const line of commandLines) {
      expect(line).not.toContain(apiToken);
      expect(line).not.toContain(joinSecret);
    }

    const baseUrl = `https://127.0.0.1:${httpPort}`;
    const fetch = trustedFetch(readFileSync(caFile, 'utf8'));
    const health = await fetch(`${baseUrl}/api/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok' });

    const node = await waitFor('the node in GET /api/nodes', 30_000, async () => {
      const response = await fetch(`${baseUrl}/api/nodes`, {
        headers: { authorization: `Bearer ${apiToken}` },
      });
      const nodes = (await response.json()) as { name: string; status: string }[];
      return nodes.find((n) => n.name === nodeName && n.status === 'online');
    });
    expect(node.name).toBe(nodeName);

    // edgectl on PATH (a link, here in the test's bin dir) and the context `local`: no token, server or CA given.
    const link = join(env.START_UP_BIN_DIR!, 'edgectl');
    expect(readlinkSync(link)).toBe(join(PROJECT_DIR, 'dist', 'cluster-manager', 'cli', 'edgectl.js'));
    expect(started.stdout).toContain(`edgectl:    ${link} (`);
    expect(started.stdout).toContain(`context "local" in ${env.EDGECTL_CONFIG}`);
    const nodes = await runEdgectlHere(['nodes'], { env: { EDGECTL_CONFIG: env.EDGECTL_CONFIG } });
    expect(nodes.code, nodes.stderr).toBe(0);
    expect(nodes.stdout).toContain(nodeName);

    const status = runScript(['status'], env);
    expect(status.status, status.output_).toBe(0);
    const pids = pidsIn(stateDir);
    expect(pids.length).toBeGreaterThanOrEqual(4); // supervisor + program, for cluster manager and node engine
    expect(pids.every(pidAlive)).toBe(true);

    const stopped = runScript(['stop'], env, 60_000);
    expect(stopped.status, stopped.output_).toBe(0);
    expect(pids.filter(pidAlive)).toEqual([]);
    expect(pidsIn(stateDir)).toEqual([]);
    await expect(fetch(`${baseUrl}/api/health`)).rejects.toThrow();
  });
});
