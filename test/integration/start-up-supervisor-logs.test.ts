import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PROJECT_DIR, pidAlive } from '../helpers/start-up.js';
import { waitFor } from '../helpers/wait.js';

const SUPERVISOR = join(PROJECT_DIR, 'scripts', 'start-up', 'supervise.mjs');
/** A program that logs numbered 100-byte lines as fast as a 1 ms timer lets it. */
const CHATTY = `let n = 0; setInterval(() => console.log(\`line \${++n} \${'x'.repeat(80)}\`), 1);`;

/** The numbers of the `line N` lines in a log file, in order. */
function lineNumbers(file: string): number[] {
  return [...readFileSync(file, 'utf8').matchAll(/^line (\d+) /gm)].map((match) => Number(match[1]));
}

/** The log files of start-up.sh's supervisor: rotated at start and by size, a few kept (issue 14, item 7). */
describe("start-up.sh's supervisor: its program's log", () => {
  let dir: string;
  let log: string;
  let supervisor: ChildProcess | undefined;

  function supervise(program: string, extra: string[] = []): ChildProcess {
    const args = ['--name', 'chatty', '--pid-file', join(dir, 'chatty.pid')];
    args.push('--child-pid-file', join(dir, 'chatty.child.pid'), '--log', log, ...extra);
    return spawn(process.execPath, [SUPERVISOR, ...args, '--', process.execPath, '-e', program], {
      stdio: 'ignore',
    });
  }

  async function stopSupervisor(): Promise<void> {
    if (!supervisor || supervisor.exitCode !== null) return;
    const exited = new Promise((resolve) => supervisor!.once('exit', resolve));
    supervisor.kill('SIGTERM');
    await exited;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'supervisor-logs-'));
    log = join(dir, 'chatty.log');
  });

  afterEach(async () => {
    await stopSupervisor();
    const childPid = existsSync(join(dir, 'chatty.child.pid'))
      ? Number(readFileSync(join(dir, 'chatty.child.pid'), 'utf8'))
      : 0;
    if (childPid > 0 && pidAlive(childPid)) process.kill(childPid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('rotates the log past its size into a bounded number of files, the program writing on', async () => {
    supervisor = supervise(CHATTY, ['--log-max-bytes', '20000', '--log-files', '2', '--log-check-ms', '20']);
    // Enough lines for many rotations: each file holds at least 200.
    await waitFor(
      () => existsSync(`${log}.2`) && lineNumbers(`${log}.2`)[0]! > 1000 && lineNumbers(log).length > 0,
      'several rotations',
      60_000,
    );
    await stopSupervisor();
    expect(existsSync(`${log}.3`)).toBe(false);
    const [current, first, second] = [log, `${log}.1`, `${log}.2`].map((file) => readFileSync(file));
    // Rotated once past the limit, not before.
    expect(first!.length).toBeGreaterThan(20_000);
    expect(second!.length).toBeGreaterThan(20_000);
    // Truncated under a program that appends: no hole of zero bytes where the old content was.
    expect(current!.includes(0)).toBe(false);
    // One stream, oldest in the highest number: each file's lines come after the one before.
    const [older, old, now] = [`${log}.2`, `${log}.1`, log].map(lineNumbers);
    expect(older!.at(-1)!).toBeLessThan(old![0]!);
    expect(old!.at(-1)!).toBeLessThan(now![0]!);
    for (const numbers of [older!, old!, now!])
      expect(numbers.every((n, i) => i === 0 || n === numbers[i - 1]! + 1)).toBe(true);
  });

  it("keeps the previous run's log as LOG.1 when it starts again", async () => {
    supervisor = supervise('console.log("first run")');
    await waitFor(() => readFileSync(log, 'utf8').includes('restarting'), 'the first run logged');
    await stopSupervisor();
    // A usage error (exit 2): the supervisor gives up at once.
    supervisor = supervise('console.log("second run"); process.exit(2)');
    const code = await new Promise((resolve) => supervisor!.once('exit', resolve));
    expect(code).toBe(1);
    expect(readFileSync(`${log}.1`, 'utf8')).toContain('first run');
    expect(readFileSync(`${log}.1`, 'utf8')).not.toContain('second run');
    expect(readFileSync(log, 'utf8')).toContain('second run');
    expect(readFileSync(log, 'utf8')).not.toContain('first run');
  });

  it('refuses a bad rotation setting with its usage line and exit 2', async () => {
    for (const bad of [
      ['--log-files', '0'],
      ['--log-max-bytes', 'lots'],
    ]) {
      const refused = supervise('', bad);
      const code = await new Promise((resolve) => refused.once('exit', resolve));
      expect(code, bad.join(' ')).toBe(2);
    }
  });
});
