import { existsSync, readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  type ClusterEvent,
  type Job,
  NODE_STATUSES,
  type NodeStatus,
  resolveDataDir,
  trustedFetch,
  UsageError,
  VERSION,
} from '../../shared/index.js';
import { ApiClient, ApiError, ServerUnreachableError } from './api-client.js';
import { bashCompletion } from './completion.js';
import {
  formatApiError,
  formatEventLine,
  formatEventsTable,
  formatJobsTable,
  formatNodesTable,
  formatOutput,
  formatTokensTable,
  type OutputFormat,
} from './format.js';
import { JobFileError, readJobFile } from './job-file.js';
import { outcomeOf, progressLines } from './job-progress.js';
import { followStream } from './stream-follower.js';

export const DEFAULT_SERVER = 'https://127.0.0.1:10100';
/** Where the cluster manager keeps its generated API token, under the project directory. */
export const DEFAULT_TOKEN_FILE = 'var/cluster-manager/api-token';
/** Where the cluster manager keeps its cluster CA, under the project directory. */
export const DEFAULT_CA_FILE = 'var/cluster-manager/tls/ca.pem';

/** Everything edgectl touches outside itself, so that tests can run it in-process. */
export interface EdgectlIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  fetch?: typeof fetch;
  readStdin: () => Promise<string>;
  now: () => number;
  /** Ends what follows (`events -f`) when aborted; the program itself runs until it is interrupted. */
  signal?: AbortSignal;
}

interface GlobalOptions {
  server?: string;
  token?: string;
  caFile?: string;
}

/** Runs one edgectl command line (without `node edgectl`); resolves to the exit code. */
export async function runEdgectl(argv: string[], io: EdgectlIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    return exitCodeFor(error, io);
  }
}

/** How often `deploy --wait` asks the cluster manager again (`jobs -w` and `events -f` follow its stream). */
const POLL_MS = 1000;
const pause = () => new Promise((resolve) => setTimeout(resolve, POLL_MS));

/** What the followers (`jobs -w`, `events -f`) say on stderr when their stream drops: it is tried again. */
function noteRetry(io: EdgectlIo) {
  return (reason: string, delayMs: number) =>
    io.stderr(`edgectl: stream interrupted (${reason}); reconnecting in ${(delayMs / 1000).toFixed(1)} s\n`);
}

/** What the command was for did not come about (`deploy --wait`, `plan`): exit 1 with the reason. */
class NotAchieved extends Error {}

function exitCodeFor(error: unknown, io: EdgectlIo): number {
  // Commander has already printed its one line; `--help` and `--version` are not errors.
  if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
  if (error instanceof UsageError) {
    io.stderr(`edgectl: ${error.message}\n`);
    return 2;
  }
  if (error instanceof ApiError) {
    io.stderr(`${formatApiError(error.body, error.status)}\n`);
    if (error.status === 401) {
      io.stderr(
        `hint: pass --token or set EDGE_API_TOKEN (the cluster manager keeps it in ${DEFAULT_TOKEN_FILE})\n`,
      );
    } else if (error.status === 403) {
      io.stderr('hint: this takes a token with another role (edgectl token list shows the roles)\n');
    }
    return 1;
  }
  if (
    error instanceof ServerUnreachableError ||
    error instanceof JobFileError ||
    error instanceof NotAchieved
  ) {
    io.stderr(`edgectl: ${error.message}\n`);
    return 1;
  }
  throw error;
}

export function buildProgram(io: EdgectlIo): Command {
  const program = new Command('edgectl')
    .description('Operate an edge cluster through its cluster manager')
    .version(VERSION)
    .option(
      '--server <url>',
      `cluster manager URL (env EDGE_SERVER, default ${DEFAULT_SERVER})`,
      parseServerUrl,
    )
    .option('--token <token>', `API token (env EDGE_API_TOKEN, else ${DEFAULT_TOKEN_FILE})`)
    .option(
      '--ca-file <path>',
      `the cluster CA to verify the server with (env EDGE_CA_FILE, else ${DEFAULT_CA_FILE} if there, else the system CAs)`,
    )
    .exitOverride()
    .configureOutput({
      writeOut: io.stdout,
      writeErr: io.stderr,
      // One line per mistake, named after the program, as the other programs of the project print it.
      outputError: (text, write) =>
        write(
          `edgectl: ${text
            .trim()
            .replace(/^error: /, '')
            .replace(/\n/g, ' ')}\n`,
        ),
    })
    .showHelpAfterError(false);

  const client = () => createClient(program.opts<GlobalOptions>(), io);
  const print = (text: string) => io.stdout(`${text}\n`);

  program
    .command('nodes')
    .description('list nodes')
    .addOption(new Option('--status <status>', 'only nodes with this status').choices(NODE_STATUSES))
    .option('--label <key=value>', 'only nodes with this label (repeat: all must match)', collectLabel, [])
    .option(
      '--limit <n>',
      'at most this many nodes (1 to 1000), then how to ask for more',
      parsePositiveNumber,
    )
    .option('--cursor <cursor>', 'the page after this cursor (from a previous --limit)')
    .addOption(outputOption('table'))
    .action(
      async (options: {
        status?: NodeStatus;
        label: string[];
        limit?: number;
        cursor?: string;
        output: OutputFormat;
      }) => {
        const page = await client().listNodes({
          status: options.status,
          labels: options.label,
          limit: options.limit,
          cursor: options.cursor,
        });
        const nodes = page.items;
        print(formatOutput(nodes, options.output, () => formatNodesTable(nodes, io.now())));
        if (page.nextCursor) io.stderr(`more nodes follow: add --cursor ${page.nextCursor}\n`);
      },
    );

  program
    .command('node')
    .description(
      'show one node, its telemetry and its instances; `node cordon|uncordon <node>`: it takes no new ' +
        'instances, or again; `node label <node> key=value key2-`: set or remove labels; `node remove <node>` ' +
        'removes it for good',
    )
    .argument('<node>', 'node id or name (or `cordon`, `uncordon`, `label`, `remove`, then the node)')
    .argument('[more...]', 'with an action: the node id or name, and for `label` the changes')
    .addOption(outputOption('yaml'))
    .action(async (ref: string, more: string[], options: { output: OutputFormat }) => {
      const [target, ...rest] = more;
      if (target === undefined) {
        print(formatOutput(await client().getNode(ref), options.output));
        return;
      }
      if ((ref === 'remove' || ref === 'cordon' || ref === 'uncordon') && rest.length === 0) {
        if (ref === 'remove') {
          const removed = await client().removeNode(target);
          print(
            `removed node ${removed.name} (${removed.id}): its secret is revoked; ${removed.placedAgain} instances to place again elsewhere`,
          );
          return;
        }
        const node = await client().cordonNode(target, ref === 'cordon');
        print(
          node.cordoned
            ? `node ${node.name} cordoned: no new instances there (what runs there stays)`
            : `node ${node.name} uncordoned: it takes new instances`,
        );
        return;
      }
      if (ref === 'label' && rest.length > 0) {
        const node = await client().labelNode(target, parseLabelChanges(rest));
        const labels = Object.entries(node.labels).map(([key, value]) => `${key}=${value}`);
        print(`node ${node.name} labels: ${labels.length > 0 ? labels.join(', ') : '(none)'}`);
        return;
      }
      throw new UsageError(
        'node: `node <node>`, `node cordon|uncordon|remove <node>` or `node label <node> key=value key2-`',
      );
    });

  program
    .command('jobs')
    .description('list jobs; with -w, then a line for each job whose state or instances change')
    .option('-w, --watch', 'keep printing changes until interrupted')
    .addOption(outputOption('table'))
    .action(async (options: { watch?: boolean; output: OutputFormat }) => {
      const api = client();
      const jobs = await api.listJobs();
      print(formatOutput(jobs, options.output, () => formatJobsTable(jobs)));
      if (!options.watch) return;
      // kubectl get -w: the rows that changed, as they change (a gone job once more, as `deleted`).
      const rowsOf = (list: Job[]) =>
        new Map(list.map((job) => [job.id, { name: job.name, row: formatJobsTable([job]).split('\n')[1]! }]));
      let shown = rowsOf(jobs);
      const printChanges = async () => {
        const now = rowsOf(await api.listJobs());
        for (const [id, { row }] of now) if (shown.get(id)?.row !== row) print(row);
        for (const [id, { name }] of shown) if (!now.has(id)) print(`${name}   ${id}   deleted`);
        shown = now;
      };
      // The list again whenever the stream says a job changed, and at every (re)connect (what changed before).
      await followStream(api, {
        query: { kinds: 'job' },
        ...(io.signal ? { signal: io.signal } : {}),
        onOpen: printChanges,
        onMessages: async (messages) => {
          if (messages.some((message) => message.kind !== 'event')) await printChanges();
        },
        onRetry: noteRetry(io),
      });
    });

  program
    .command('job')
    .description('show one job with its instances')
    .argument('<job>', 'job id or name')
    .addOption(outputOption('yaml'))
    .action(async (ref: string, options: { output: OutputFormat }) => {
      print(formatOutput(await client().getJob(ref), options.output));
    });

  program
    .command('deploy')
    .description('deploy a job from a YAML or JSON spec')
    .requiredOption('-f, --file <path>', 'job spec file, or - for stdin')
    .option('--wait', 'follow each instance until all run; exit 1 with the reason if one cannot run')
    .option('--timeout <duration>', 'with --wait: give up after this long (default 5m)', parseDuration, 300)
    .action(async (options: { file: string; wait?: boolean; timeout: number }) => {
      const api = client();
      let job = await api.createJob(await readJobFile(options.file, io.readStdin));
      print(`created job ${job.name} (id ${job.id})`);
      // What the answer already says (where each instance goes, or why it waits), with or without --wait.
      const seen = new Map<number, string>();
      for (const line of progressLines(job, seen)) print(line);
      if (!options.wait) return;
      const deadline = io.now() + options.timeout * 1000;
      for (;;) {
        const outcome = outcomeOf(job);
        if (outcome.done === 'running') {
          print(`job ${job.name}: every instance is running`);
          return;
        }
        if (outcome.done === 'cannot run') throw new NotAchieved(`cannot run: ${outcome.reason}`);
        if (io.now() >= deadline)
          throw new NotAchieved(`still not running after ${options.timeout} s; see edgectl job ${job.name}`);
        await pause();
        job = await api.getJob(job.id);
        for (const line of progressLines(job, seen)) print(line);
      }
    });

  program
    .command('plan')
    .description('where each instance of a job spec would go now, or why not; changes nothing')
    .requiredOption('-f, --file <path>', 'job spec file, or - for stdin')
    .action(async (options: { file: string }) => {
      const plan = await client().planJob(await readJobFile(options.file, io.readStdin));
      for (const instance of plan.instances)
        print(
          instance.node !== null
            ? `${plan.name}#${instance.number} -> ${instance.node}`
            : `${plan.name}#${instance.number} cannot be placed: ${instance.reason}`,
        );
      const unplaced = plan.instances.filter((instance) => instance.node === null).length;
      if (unplaced > 0)
        throw new NotAchieved(`${unplaced} of ${plan.instances.length} instances cannot be placed now`);
    });

  program
    .command('delete')
    .description('delete a job and stop its instances')
    .argument('<job>', 'job id or name')
    .action(async (ref: string) => {
      await client().deleteJob(ref);
      print(`deleting job ${ref}`);
    });

  program
    .command('move')
    .description('move one instance of a job to another node')
    .argument('<job>', 'job id or name')
    .requiredOption('--instance <number>', 'instance number', parseWholeNumber)
    .option('--to <node>', 'target node id or name (default: the scheduler picks one)')
    .action(async (ref: string, options: { instance: number; to?: string }) => {
      await client().moveInstance(ref, options.instance, options.to);
      print(`moving instance ${options.instance} of ${ref}${options.to ? ` to ${options.to}` : ''}`);
    });

  program
    .command('scale')
    .description('set the number of instances of a job')
    .argument('<job>', 'job id or name')
    .argument('<replicas>', 'desired number of instances', parseWholeNumber)
    .action(async (ref: string, replicas: number) => {
      await client().scaleJob(ref, replicas);
      print(`scaling job ${ref} to ${replicas} replicas`);
    });

  program
    .command('events')
    .description(
      'recent cluster events, newest first; with -f the newest last, then each new one as it comes',
    )
    .option('--limit <n>', 'how many events', parsePositiveNumber)
    .option('--type <type>', 'of this type only (e.g. instance.status)')
    .option('--job <job>', 'about this job only (id or name)')
    .option('--node <node>', 'about this node only (id or name)')
    .option('-f, --follow', 'keep printing new events until interrupted')
    .addOption(outputOption('table'))
    .action(
      async (options: {
        limit?: number;
        type?: string;
        job?: string;
        node?: string;
        follow?: boolean;
        output: OutputFormat;
      }) => {
        const api = client();
        const query = { limit: options.limit, type: options.type, job: options.job, node: options.node };
        const events = await api.listEvents(query);
        if (!options.follow) {
          print(formatOutput(events, options.output, () => formatEventsTable(events)));
          return;
        }
        // Followed: oldest first, one line each (JSON lines with -o json), then each new one as the stream
        // brings it (from after the newest shown, again after a reconnect: none missed, none twice).
        const line = (event: ClusterEvent) =>
          options.output === 'json' ? JSON.stringify(event) : formatEventLine(event);
        for (const event of [...events].reverse()) print(line(event));
        await followStream(api, {
          query: { kinds: 'event', type: options.type, job: options.job, node: options.node },
          after: events[0]?.id ?? 0,
          ...(io.signal ? { signal: io.signal } : {}),
          onOpen: async () => {},
          onMessages: async (messages) => {
            for (const message of messages) {
              if (message.kind === 'event') print(line(message.data));
              else if (message.kind === 'resync')
                io.stderr(`edgectl: some events may be missing: ${message.data.reason}\n`);
            }
          },
          onRetry: noteRetry(io),
        });
      },
    );

  const token = program
    .command('token')
    .description('named tokens with a role: join (registers nodes), admin, deployer, read-only');
  token
    .command('create')
    .description(
      'make a token; its secret is printed once (a join token in the form that pins the cluster CA)',
    )
    .argument('<name>', 'a name for it (letters, digits, . _ -)')
    .addOption(
      new Option('--role <role>', 'what it may do')
        .choices(['join', 'admin', 'deployer', 'read-only'])
        .default('join'),
    )
    .option(
      '--ttl <duration>',
      'valid for this long: 90s, 30m, 24h, 7d (default: until revoked)',
      parseDuration,
    )
    .action(async (name: string, options: { role: string; ttl?: number }) => {
      const created = await client().createToken(name, options.role, options.ttl);
      print(created.token);
      io.stderr(
        `${created.role} token ${created.name} created${created.expiresAt ? `, valid until ${new Date(created.expiresAt).toISOString()}` : ''}: the line above is its only copy\n`,
      );
    });
  token
    .command('list')
    .description('every token: name, role, state, expiry (never a secret)')
    .addOption(outputOption('table'))
    .action(async (options: { output: OutputFormat }) => {
      const tokens = await client().listTokens();
      print(formatOutput(tokens, options.output, () => formatTokensTable(tokens)));
    });
  token
    .command('revoke')
    .description('revoke a token: it opens nothing from now on (nodes that joined with it stay)')
    .argument('<name>', 'the token name')
    .action(async (name: string) => {
      await client().revokeToken(name);
      print(`revoked token ${name}`);
    });

  program
    .command('health')
    .description("the cluster manager's health and version")
    .addOption(outputOption('table'))
    .action(async (options: { output: OutputFormat }) => {
      const health = await client().health();
      print(formatOutput(health, options.output, () => `${health.status} (version ${health.version})`));
    });

  program
    .command('completion')
    .description('print a completion script: `source <(edgectl completion bash)` (in ~/.bashrc to keep it)')
    .argument('<shell>', 'bash')
    .action((shell: string) => {
      if (shell !== 'bash') throw new UsageError(`completion: only bash is supported, not "${shell}"`);
      io.stdout(bashCompletion(program));
    });

  return program;
}

function outputOption(defaultFormat: OutputFormat): Option {
  const choices = defaultFormat === 'table' ? ['table', 'yaml', 'json'] : ['yaml', 'json'];
  return new Option('-o, --output <format>', 'output format').choices(choices).default(defaultFormat);
}

function createClient(options: GlobalOptions, io: EdgectlIo): ApiClient {
  const server = options.server ?? serverFromEnv(io.env.EDGE_SERVER) ?? DEFAULT_SERVER;
  const token = options.token || io.env.EDGE_API_TOKEN || readTokenFile();
  return new ApiClient({ server, token, fetch: io.fetch ?? trustedFetch(readCa(options, io)) });
}

/** The CA named by flag or env (it must be readable), else the all-in-one install's, if there. */
function readCa(options: GlobalOptions, io: EdgectlIo): string | undefined {
  const named = options.caFile || io.env.EDGE_CA_FILE;
  if (named) {
    try {
      return readFileSync(named, 'utf8');
    } catch (error) {
      throw new UsageError(
        `cannot read the CA file ${named}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
  }
  const local = resolveDataDir(DEFAULT_CA_FILE);
  return existsSync(local) ? readFileSync(local, 'utf8') : undefined;
}

function serverFromEnv(value: string | undefined): string | undefined {
  if (!value) return undefined;
  try {
    return parseServerUrl(value);
  } catch (error) {
    throw new UsageError(`EDGE_SERVER: ${(error as Error).message}`);
  }
}

/** The all-in-one install keeps the token next to the project; an operator there needs no flag. */
function readTokenFile(): string | undefined {
  const path = resolveDataDir(DEFAULT_TOKEN_FILE);
  if (!existsSync(path)) return undefined;
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function parseServerUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`not a URL: ${value}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(`not an http(s) URL: ${value}`);
  }
  return value;
}

function collectLabel(value: string, labels: string[]): string[] {
  if (value.indexOf('=') < 1) throw new InvalidArgumentError('must be key=value');
  return [...labels, value];
}

function parseWholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('must be a whole number');
  return Number(value);
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** `90s`, `30m`, `24h`, `7d` as seconds. */
function parseDuration(value: string): number {
  const match = /^(\d+)([smhd])$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError('a number and a unit: 90s, 30m, 24h, 7d');
  return Number(match[1]) * DURATION_UNITS[match[2]!]!;
}

function parsePositiveNumber(value: string): number {
  const number = parseWholeNumber(value);
  if (number === 0) throw new InvalidArgumentError('must be at least 1');
  return number;
}

/** `key=value` sets a label, `key-` removes it (kubectl's syntax). */
export function parseLabelChanges(changes: string[]): Record<string, string | null> {
  const patch: Record<string, string | null> = {};
  for (const change of changes) {
    const at = change.indexOf('=');
    if (at > 0) patch[change.slice(0, at)] = change.slice(at + 1);
    else if (change.endsWith('-') && change.length > 1) patch[change.slice(0, -1)] = null;
    else throw new UsageError(`node label: "${change}" is neither key=value nor key- (to remove it)`);
  }
  return patch;
}
