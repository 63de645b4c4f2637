import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait.js';

const ROOT = join(import.meta.dirname, '..', '..');

export const BINS = {
  clusterManager: join(ROOT, 'dist/cluster-manager/main.js'),
  nodeEngine: join(ROOT, 'dist/node-engine/main.js'),
  netManager: join(ROOT, 'dist/net-manager/main.js'),
  edgectl: join(ROOT, 'dist/cluster-manager/cli/edgectl.js'),
  fleetSim: join(ROOT, 'dist/fleet-sim/main.js'),
} as const;

/** V8 flags and environment Node.js runs a program with. */
export interface NodeOptions {
  flags: string[];
  env: Record<string, string>;
}

/** Reads a node-options file (`node-engine/node-options`): `--flag` and `NAME=value` lines, `#` comments. */
export function readNodeOptions(file: string): NodeOptions {
  const options: NodeOptions = { flags: [], env: {} };
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('--')) options.flags.push(line);
    else if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(line)) {
      const at = line.indexOf('=');
      options.env[line.slice(0, at)] = line.slice(at + 1);
    }
  }
  return options;
}

/** How each program runs, as start-up.sh starts it (from the same file). */
const NODE_OPTIONS: Record<string, NodeOptions> = {
  [BINS.nodeEngine]: readNodeOptions(join(ROOT, 'node-engine/node-options')),
};

/** One of the project's programs, started from its built bin as a user would, with its log kept. */
export class Program {
  output = '';
  private exit?: Promise<number | null>;

  private constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.on('data', (chunk) => this.append(chunk));
    child.stderr?.on('data', (chunk) => this.append(chunk));
    this.exit = new Promise((resolve) =>
      child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))),
    );
  }

  /**
   * `prefix` runs the program through another command, e.g. `['ip', 'netns', 'exec', '<ns>']` to start it in
   * a network namespace (ip execs node in place, so `pid` is still the program's own). `nodeOptions`: other V8
   * flags and environment than start-up.sh's (benchmarks compare them).
   */
  static start(
    name: string,
    bin: string,
    args: string[],
    env: Record<string, string> = {},
    prefix: string[] = [],
    nodeOptions: NodeOptions = NODE_OPTIONS[bin] ?? { flags: [], env: {} },
  ): Program {
    // E2E_CPU_PROF_DIR: every program writes a V8 CPU profile there when it exits (not on kill -9).
    const profile = process.env.E2E_CPU_PROF_DIR
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.E2E_CPU_PROF_DIR}`]
      : [];
    const argv = [process.execPath, ...nodeOptions.flags, ...profile, bin, ...args];
    const command = [...prefix, ...argv];
    const child = spawn(command[0]!, command.slice(1), {
      env: { ...process.env, LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? 'info', ...nodeOptions.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new Program(name, child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitForLog(pattern: RegExp, timeoutMs = 20_000): Promise<string> {
    return waitFor(
      () => {
        if (!this.running) throw new Error(`${this.name} exited:\n${this.output.slice(-3000)}`);
        return this.output.match(pattern)?.[0];
      },
      `${this.name} to log ${pattern}`,
      timeoutMs,
    );
  }

  /** SIGTERM and wait; SIGKILL after the grace period. Resolves with the exit code. */
  async stop(graceMs = 10_000): Promise<number | null> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      const code = await this.exit;
      clearTimeout(timer);
      return code ?? null;
    }
    return this.exit ?? null;
  }

  /** kill -9: no chance to clean up, as in a crash. */
  async crash(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exit;
  }

  exited(): Promise<number | null> {
    return this.exit ?? Promise.resolve(null);
  }

  private append(chunk: Buffer): void {
    this.output += chunk.toString();
    if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
  }
}
