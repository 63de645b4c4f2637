import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trustedFetch } from '../../shared/index.js';
import { removeContainersWithLabel } from './docker.js';
import { freePort } from './ports.js';
import { BINS, type NodeOptions, Program } from './programs.js';
import { waitFor } from './wait.js';

export interface JobBody {
  id: string;
  name: string;
  state: string;
  instances: {
    number: number;
    nodeId: string | null;
    nodeName: string | null;
    status: string;
    detail: string;
    containerId: string | null;
    generation: number;
    restarts: number;
    exitCode?: number;
  }[];
}

/** A workload that stops at once on SIGTERM (a bare `sleep` as PID 1 ignores it and waits out Docker's 10 s). */
export const WORKLOAD = ['sh', '-c', 'trap "exit 0" TERM; sleep 3600 & wait'];

export const API_TOKEN = 'e2e-api-token';
/** The join token's secret; nodes get the full token the cluster manager writes (it pins the cluster CA). */
export const JOIN_TOKEN = 'e2e-join-token';

/**
 * A cluster from the built programs, as a user runs it: one cluster manager with its embedded broker (or an
 * external one, `mqttUrl`) and node engines sharing this machine's dockerd, each with its own name, data dir
 * and port. The cluster manager can be stopped or killed and started again with the same data dir and ports.
 */
export class E2eCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'edge-e2e-'));
  httpPort = 0;
  mqttPort = 0;
  cm?: Program;
  readonly engines = new Map<string, Program>();
  private readonly enginePorts = new Map<string, number>();
  readonly nodeIds = new Map<string, string>();
  /** What the cluster manager wrote for nodes to join with: `E10<CA fingerprint>::<secret>`. */
  joinToken = '';
  /** The read-only token the cluster manager made (the MQTT `operator` login's password). */
  telemetryToken = '';
  /** The cluster CA, once the cluster manager made it. */
  ca = '';
  private trusting: typeof fetch = fetch;

  /**
   * `host`: the address the cluster manager listens on and is reached at (default 127.0.0.1); a bridge
   * address lets node engines in network namespaces reach it too (see netns.ts).
   */
  /** `insecure`: the cluster manager runs with `--insecure` (plain text; benchmarks compare it with TLS). */
  constructor(
    private readonly options: {
      nodeTimeoutMs?: number;
      mqttUrl?: string;
      host?: string;
      insecure?: boolean;
      /** The cluster manager runs with `--overlay-plaintext` (benchmarks compare it with encryption). */
      overlayPlaintext?: boolean;
      /** `--registration-rate` (a fleet simulator registers hundreds a second from loopback). */
      registrationRate?: number;
    } = {},
  ) {}

  get host(): string {
    return this.options.host ?? '127.0.0.1';
  }

  /** How node engines and the API client reach the cluster manager. */
  get url(): string {
    return `${this.options.insecure ? 'http' : 'https'}://${this.host}:${this.httpPort}`;
  }

  get cmDataDir(): string {
    return join(this.dir, 'cm');
  }

  /** Starts (or starts again, with the same data dir and ports) the cluster manager. */
  async startClusterManager(): Promise<void> {
    this.httpPort ||= await freePort();
    if (!this.options.mqttUrl) this.mqttPort ||= await freePort();
    const broker = this.options.mqttUrl
      ? ['--mqtt-url', this.options.mqttUrl]
      : ['--mqtt-port', String(this.mqttPort)];
    // Tokens by environment, never on a command line (where every user of the machine can read them).
    this.cm = Program.start(
      'cluster-manager',
      BINS.clusterManager,
      [
        ...['--host', this.host, '--http-port', String(this.httpPort), ...broker],
        // Any free UDP port: clusters of different tests (and benches) may run side by side.
        ...['--rendezvous-port', '0'],
        ...['--data-dir', this.cmDataDir, ...(this.options.insecure ? ['--insecure'] : [])],
        ...(this.options.overlayPlaintext ? ['--overlay-plaintext'] : []),
        ...(this.options.registrationRate === undefined
          ? []
          : ['--registration-rate', String(this.options.registrationRate)]),
        ...['--node-timeout', String(this.options.nodeTimeoutMs ?? 4000), '--telemetry-interval', '1000'],
      ],
      { CM_API_TOKEN: API_TOKEN, CM_JOIN_TOKEN: JOIN_TOKEN },
    );
    await this.cm.waitForLog(/cluster manager listening/);
    this.joinToken = readFileSync(join(this.cmDataDir, 'node-join-token'), 'utf8').trim();
    this.telemetryToken = readFileSync(join(this.cmDataDir, 'telemetry-token'), 'utf8').trim();
    if (!this.options.insecure) {
      this.ca = readFileSync(join(this.cmDataDir, 'tls', 'ca.pem'), 'utf8');
      this.trusting = trustedFetch(this.ca);
    }
  }

  /**
   * Starts (or starts again, with the same data dir and port) the node engine called `name`; with `netns`,
   * inside that network namespace (`ip netns exec`; the cluster manager's `host` must be reachable there).
   */
  async startEngine(
    name: string,
    extraArgs: string[] = [],
    options: {
      netns?: string;
      env?: Record<string, string>;
      /** Another build of the node engine (a benchmark's baseline), and other Node.js flags than start-up.sh's. */
      bin?: string;
      nodeOptions?: NodeOptions;
    } = {},
  ): Promise<Program> {
    if (!this.enginePorts.has(name)) this.enginePorts.set(name, await freePort());
    const engine = Program.start(
      name,
      options.bin ?? BINS.nodeEngine,
      [
        ...['--cluster-manager', this.url, '--name', name],
        ...[
          '--data-dir',
          join(this.dir, name),
          '--port',
          String(this.enginePorts.get(name)),
          '--runtimes',
          'docker',
        ],
        ...extraArgs,
      ],
      { JOIN_TOKEN: this.joinToken, ...options.env },
      options.netns ? ['ip', 'netns', 'exec', options.netns] : [],
      options.nodeOptions,
    );
    this.engines.set(name, engine);
    return engine;
  }

  /** The local API port (`GET /metrics`...) of the node engine called `name`. */
  enginePort(name: string): number {
    const port = this.enginePorts.get(name);
    if (port === undefined) throw new Error(`no node engine ${name}`);
    return port;
  }

  /** Starts the cluster manager and the named node engines, and waits until every node is online. */
  async start(names: string[]): Promise<void> {
    await this.startClusterManager();
    for (const name of names) await this.startEngine(name);
    await this.waitForNodes(names);
  }

  async waitForNodes(names: string[], timeoutMs = 30_000): Promise<void> {
    const nodes = await waitFor(
      async () => {
        const list = (await (await this.api('/api/nodes')).json()) as {
          id: string;
          name: string;
          status: string;
        }[];
        const wanted = list.filter((node) => names.includes(node.name) && node.status === 'online');
        return wanted.length === names.length && wanted;
      },
      `nodes ${names.join(', ')} online`,
      timeoutMs,
    );
    for (const node of nodes) this.nodeIds.set(node.name, node.id);
  }

  async api(path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
    const request = () =>
      this.trusting(`${this.url}${path}`, {
        ...init,
        headers: {
          authorization: `Bearer ${API_TOKEN}`,
          ...(init.json !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(init.headers as Record<string, string>),
        },
        body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      });
    try {
      return await request();
    } catch (error) {
      // Tests block this process's event loop in execFileSync for seconds; meanwhile the cluster manager closes
      // the idle keep-alive connection, and the next request goes out on it. The server never read it (it only
      // closes idle connections), so sending it once more on a fresh connection is safe, POST included.
      if ((error as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw error;
      return request();
    }
  }

  async createJob(spec: Record<string, unknown>): Promise<JobBody> {
    const res = await this.api('/api/jobs', { method: 'POST', json: spec });
    if (res.status !== 201) throw new Error(`POST /api/jobs answered ${res.status}: ${await res.text()}`);
    return (await res.json()) as JobBody;
  }

  async job(id: string): Promise<JobBody> {
    return (await (await this.api(`/api/jobs/${id}`)).json()) as JobBody;
  }

  /** Waits until the job's instances satisfy `check` and returns the job. */
  waitForJob(
    id: string,
    check: (job: JobBody) => boolean,
    what: string,
    timeoutMs = 45_000,
  ): Promise<JobBody> {
    return waitFor(
      async () => {
        const job = await this.job(id);
        return check(job) && job;
      },
      what,
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    await Promise.all([...this.engines.values()].map((engine) => engine.stop()));
    await this.cm?.stop();
    for (const id of this.nodeIds.values()) removeContainersWithLabel(`edge.node=${id}`);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Every instance of the job is running. */
export const allRunning = (job: JobBody) =>
  job.instances.length > 0 && job.instances.every((instance) => instance.status === 'running');
