import { spawn } from 'node:child_process';

/** Where the commands the plumbing needs come from, named in the error when one is missing. */
const PACKAGES: Record<string, string> = {
  ip: 'iproute2',
  nsenter: 'util-linux',
  sysctl: 'procps',
  iptables: 'iptables',
  'iptables-restore': 'iptables',
};

/** A command that could not run or exited non-zero; the message holds the command line and its stderr. */
export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    message: string,
    readonly argv: readonly string[],
    readonly stderr: string,
    /** The program itself is not installed (`iptables` on a minimal machine, ...). */
    readonly notInstalled: boolean,
  ) {
    super(message);
  }
}

export interface RunOptions {
  /** Written to the command's stdin (then closed). */
  input?: string;
  timeoutMs?: number;
}

/**
 * Runs the programs that configure links, routes and the firewall, optionally inside another network namespace
 * through a prefix: tests pass `['ip', 'netns', 'exec', '<ns>']` so everything lands in their stand-in worker,
 * production passes none (the net manager runs in the worker's namespace).
 */
export class CommandRunner {
  constructor(
    readonly prefix: readonly string[] = [],
    private readonly defaultTimeoutMs = 10_000,
  ) {}

  /** A runner for the network namespace of process `pid` (a container's), entered with `nsenter`. */
  inNetworkOf(pid: number): CommandRunner {
    return new CommandRunner([...this.prefix, 'nsenter', '-t', String(pid), '-n'], this.defaultTimeoutMs);
  }

  /** Runs `argv` (after the prefix) and resolves to its stdout. */
  run(argv: readonly string[], options: RunOptions = {}): Promise<string> {
    const full = [...this.prefix, ...argv];
    const [program, ...args] = full as [string, ...string[]];
    const commandLine = full.join(' ');
    return new Promise((resolve, reject) => {
      const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, options.timeoutMs ?? this.defaultTimeoutMs);
      child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
      // A command that exits before reading its stdin must not surface as an EPIPE crash.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input ?? '');
      child.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const missing = error.code === 'ENOENT';
        const hint = PACKAGES[program] ? ` (package ${PACKAGES[program]})` : '';
        const message = missing
          ? `\`${commandLine}\` failed: ${program} is not installed${hint}`
          : `\`${commandLine}\` failed: ${error.message}`;
        reject(new CommandError(message, full, '', missing));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const err = Buffer.concat(stderr).toString('utf8').trim();
        if (code === 0) {
          resolve(Buffer.concat(stdout).toString('utf8'));
          return;
        }
        const how = timedOut ? 'timed out' : signal ? `killed by ${signal}` : `exit ${code}`;
        // Behind a prefix another program execs this one: `ip netns exec` says so on stderr, others exit 127.
        const missing = code === 127 || /exec of ".*" failed: No such file or directory/.test(err);
        reject(
          new CommandError(`\`${commandLine}\` failed (${how}): ${err || 'no output'}`, full, err, missing),
        );
      });
    });
  }

  /** `ip <args>`; resolves to stdout. */
  ip(args: readonly string[]): Promise<string> {
    return this.run(['ip', ...args]);
  }

  /** `ip -j <args>` parsed; JSON output of `ip` is an array of objects. */
  async ipJson<T>(args: readonly string[]): Promise<T[]> {
    const out = await this.ip(['-j', ...args]);
    return out.trim() === '' ? [] : (JSON.parse(out) as T[]);
  }

  /**
   * Runs several `ip` commands in one process (`ip -batch -`), stopping at the first that fails; the error names
   * that command. `force` runs them all and fails at the end if any failed.
   */
  async ipBatch(commands: readonly string[], options: { force?: boolean } = {}): Promise<void> {
    if (commands.length === 0) return;
    const argv = options.force ? ['ip', '-force', '-batch', '-'] : ['ip', '-batch', '-'];
    try {
      await this.run(argv, { input: `${commands.join('\n')}\n` });
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      const failed = [...error.stderr.matchAll(/Command failed -:(\d+)/g)].map(
        (match) => commands[Number(match[1]) - 1],
      );
      const which = failed.length > 0 ? ` at \`ip ${failed.join('`, `ip ')}\`` : '';
      throw new CommandError(
        `\`${[...this.prefix, ...argv].join(' ')}\` failed${which}: ${error.stderr.replace(/\s*Command failed -:\d+/g, '').trim() || error.message}`,
        error.argv,
        error.stderr,
        error.notInstalled,
      );
    }
  }
}
