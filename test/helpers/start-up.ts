import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { arch } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Running `./start-up.sh` as a user does, from the project directory, without a terminal. */
export const PROJECT_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const SCRIPT = join(PROJECT_DIR, 'start-up.sh');

/** The start-up name of this machine's architecture. */
export function machineArch(): string {
  const names: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm-7' };
  const name = names[arch()];
  if (!name) throw new Error(`unsupported test machine architecture ${arch()}`);
  return name;
}

/**
 * This process's environment without the variables that pick the start-up mode or its addresses, with the
 * edgectl link and config file start-up.sh writes kept under `dir`, a folder of the test's (never the machine's
 * /usr/local/bin or ~/.config).
 */
export function baseEnv(dir: string): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['CLUSTER_MANAGER_URL', 'JOIN_TOKEN', 'ADVERTISE_ADDRESS', 'NM_PUBLIC_IP'])
    delete env[name];
  env.START_UP_BIN_DIR = join(dir, 'bin');
  env.EDGECTL_CONFIG = join(dir, 'edgectl', 'config.json');
  return env;
}

/**
 * Runs the script with `args` and `env`; `prefix` runs it inside something (`ip netns exec <ns>`). No terminal:
 * the script must never wait for an answer.
 */
export function runScript(
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 20_000,
  prefix: string[] = [],
): SpawnSyncReturns<string> & { output_: string } {
  const [program, ...rest] = [...prefix, SCRIPT, ...args] as [string, ...string[]];
  const result = spawnSync(program, rest, {
    cwd: PROJECT_DIR,
    env,
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return Object.assign(result, { output_: `${result.stdout ?? ''}${result.stderr ?? ''}` });
}

/** Alive and not a zombie (an orphaned zombie may never be reaped inside a container). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The pids named by the pid files in a start-up state dir (supervisors and programs). */
export function pidsIn(stateDir: string): number[] {
  const runDir = join(stateDir, 'run');
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir)
    .filter((file) => file.endsWith('.pid'))
    .map((file) => Number(readFileSync(join(runDir, file), 'utf8').trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/** Stops what a start-up state dir names, through the script and then by its pids (all the caller's own). */
export function stopStartUp(env: NodeJS.ProcessEnv, stateDir: string, prefix: string[] = []): void {
  runScript(['stop'], env, 60_000, prefix);
  for (const pid of pidsIn(stateDir)) {
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  }
}
