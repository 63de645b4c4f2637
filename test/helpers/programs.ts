import { type ChildProcess, spawn } from 'node:child_process';
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

/** Node flags and environment each program runs with, as start-up.sh starts it. */
const NODE_FLAGS: Record<string, string[]> = {
  [BINS.nodeEngine]: ['--max-semi-space-size=1'],
};
const TUNING_ENV: Record<string, Record<string, string>> = {
  [BINS.nodeEngine]: { MALLOC_ARENA_MAX: '2' },
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
   * a network namespace (ip execs node in place, so `pid` is still the program's own).
   */
  static start(
    name: string,
    bin: string,
    args: string[],
    env: Record<string, string> = {},
    prefix: string[] = [],
  ): Program {
    // E2E_CPU_PROF_DIR: every program writes a V8 CPU profile there when it exits (not on kill -9).
    const profile = process.env.E2E_CPU_PROF_DIR
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.E2E_CPU_PROF_DIR}`]
      : [];
    const argv = [process.execPath, ...(NODE_FLAGS[bin] ?? []), ...profile, bin, ...args];
    const command = [...prefix, ...argv];
    const child = spawn(command[0]!, command.slice(1), {
      env: { ...process.env, LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? 'info', ...TUNING_ENV[bin], ...env },
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
