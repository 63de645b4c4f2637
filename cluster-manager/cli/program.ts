import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import {
  type ClusterEvent,
  type Job,
  MAX_LOG_TAIL,
  NODE_STATUSES,
  type NodeStatus,
  parseLogSince,
  trustedFetch,
  UsageError,
  VERSION,
} from '../../shared/index.js';
import { ApiClient, ApiError, ServerUnreachableError } from './api-client.js';
import { bashCompletion } from './completion.js';
import { addConfigCommands } from './config-commands.js';
import { ConfigFileError, loadConfig } from './config-file.js';
import {
  type ConnectionFlags,
  DEFAULT_CA_FILE,
  DEFAULT_SERVER,
  DEFAULT_TOKEN_FILE,
  parseServerUrl,
  resolveConnection,
} from './connection.js';
import {
  formatApiError,
  formatEventLine,
  formatEventsTable,
  formatJobsTable,
  formatNodesTable,
  formatOutput,
  formatTokensTable,
  formatVersionsTable,
  type OutputFormat,
} from './format.js';
import { JobFileError, readJobFile } from './job-file.js';
import {
  describeChange,
  describePlannedUpdate,
  outcomeOf,
  progressLines,
  rolloutOutcomeOf,
} from './job-progress.js';
import { followStream } from './stream-follower.js';

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
  /**
   * Resolves once stdout took what was written to it (a pipe to a slow reader): `logs -f` reads no faster than
   * its reader, so nothing piles up in edgectl, nor (by the API's flow control) in the cluster manager or the node.
   */
  stdoutDrained?: () => Promise<void>;
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
        `hint: pass --token or set EDGE_API_TOKEN, or use a context with a token (edgectl config set-context); the cluster manager keeps it in ${DEFAULT_TOKEN_FILE}\n`,
      );
    } else if (error.status === 403) {
      io.stderr('hint: this takes a token with another role (edgectl token list shows the roles)\n');
    }
    return 1;
  }
  if (
    error instanceof ServerUnreachableError ||
    error instanceof JobFileError ||
    error instanceof ConfigFileError ||
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
      `cluster manager URL (env EDGE_SERVER, else the context's, else ${DEFAULT_SERVER})`,
      parseServerUrl,
    )
    .option(
      '--token <token>',
      `API token (env EDGE_API_TOKEN, else the context's, else ${DEFAULT_TOKEN_FILE})`,
    )
    .option(
      '--ca-file <path>',
      `the cluster CA to verify the server with (env EDGE_CA_FILE, else the context's, else ${DEFAULT_CA_FILE} if there, else the system CAs)`,
    )
    .option(
      '--context <name>',
      'the context of the config file to use (env EDGE_CONTEXT, else its current one); see `edgectl config`',
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

  const client = () => createClient(program.opts<ConnectionFlags>(), io);
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
        'instances, or again; `node drain <node> [--wait]`: move everything there away; ' +
        '`node label <node> key=value key2-`: set or remove labels; `node remove <node>` removes it for good',
    )
    .argument(
      '<node>',
      'node id or name (or `cordon`, `uncordon`, `drain`, `label`, `remove`, then the node)',
    )
    .argument('[more...]', 'with an action: the node id or name, and for `label` the changes')
    .addOption(outputOption('yaml'))
    .option(
      '--wait',
      'with drain: follow it until nothing runs there; exit 1 with the reason if something stays',
    )
    .option(
      '--timeout <duration>',
      'with drain --wait: give up after this long (default 10m)',
      parseDuration,
      600,
    )
    .action(
      async (
        ref: string,
        more: string[],
        options: { output: OutputFormat; wait?: boolean; timeout: number },
      ) => {
        const [target, ...rest] = more;
        if (target === undefined) {
          print(formatOutput(await client().getNode(ref), options.output));
          return;
        }
        if (ref === 'drain' && rest.length === 0) {
          await drainNode(client(), target, options.wait === true, options.timeout);
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
          'node: `node <node>`, `node cordon|uncordon|drain|remove <node>` or `node label <node> key=value key2-`',
        );
      },
    );

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
      const job = await api.createJob(await readJobFile(options.file, io.readStdin));
      print(`created job ${job.name} (id ${job.id})`);
      await followInstances(api, job, options.wait === true, options.timeout);
    });

  program
    .command('apply')
    .description('create a job from a spec, or update it to the spec; the same spec again changes nothing')
    .requiredOption('-f, --file <path>', 'job spec file, or - for stdin')
    .option('--wait', 'follow the roll-out until it succeeds; exit 1 with the reason if it fails')
    .option('--timeout <duration>', 'with --wait: give up after this long (default 10m)', parseDuration, 600)
    .action(async (options: { file: string; wait?: boolean; timeout: number }) => {
      const api = client();
      const spec = await readJobFile(options.file, io.readStdin);
      const existing = await api.findJob(nameOf(spec));
      if (!existing) {
        const job = await api.createJob(spec);
        print(`created job ${job.name} (id ${job.id})`);
        await followInstances(api, job, options.wait === true, options.timeout);
        // Until version 1 is stable: what a later update's automatic revert goes back to.
        if (options.wait) await followRollout(api, job, job.version, options.timeout);
        return;
      }
      const job = await api.updateJob(existing.id, spec);
      print(describeChange(job, job.change));
      if (options.wait && job.change.action !== 'none')
        await followRollout(api, job, job.version, options.timeout);
    });

  program
    .command('versions')
    .description("a job's kept versions, newest first")
    .argument('<job>', 'job id or name')
    .addOption(outputOption('table'))
    .action(async (ref: string, options: { output: OutputFormat }) => {
      const api = client();
      const [job, versions] = await Promise.all([api.getJob(ref), api.jobVersions(ref)]);
      print(formatOutput(versions, options.output, () => formatVersionsTable(versions, job.version)));
    });

  program
    .command('rollback')
    .description('roll a job back to an earlier version (default: the last stable one before the current)')
    .argument('<job>', 'job id or name')
    .option('--to-version <n>', 'the version to go back to', parsePositiveNumber)
    .option('--wait', 'follow the roll-out until it succeeds; exit 1 with the reason if it fails')
    .option('--timeout <duration>', 'with --wait: give up after this long (default 10m)', parseDuration, 600)
    .action(async (ref: string, options: { toVersion?: number; wait?: boolean; timeout: number }) => {
      const api = client();
      const [current, versions] = await Promise.all([api.getJob(ref), api.jobVersions(ref)]);
      const target =
        options.toVersion !== undefined
          ? versions.find((version) => version.version === options.toVersion)
          : versions.find((version) => version.stable && version.version < current.version);
      if (!target) {
        throw new NotAchieved(
          options.toVersion !== undefined
            ? `job ${current.name} has no version ${options.toVersion} (edgectl versions ${current.name})`
            : `job ${current.name} has no stable version before version ${current.version}`,
        );
      }
      // As `kubectl rollout undo`: the old spec at today's replica count.
      const job = await api.updateJob(current.id, { ...target.spec, replicas: current.replicas });
      print(`${describeChange(job, job.change)} (back to version ${target.version})`);
      if (options.wait && job.change.action !== 'none')
        await followRollout(api, job, job.version, options.timeout);
    });

  program
    .command('plan')
    .description(
      'what applying a job spec would do now: where instances would go, or why not; changes nothing',
    )
    .requiredOption('-f, --file <path>', 'job spec file, or - for stdin')
    .action(async (options: { file: string }) => {
      const api = client();
      const spec = await readJobFile(options.file, io.readStdin);
      const existing = await api.findJob(nameOf(spec));
      const plan = existing ? await api.planUpdate(existing.id, spec) : await api.planJob(spec);
      if (plan.update) print(describePlannedUpdate(plan.name, plan.update));
      // A new job's instances by number; an update's by what they are: new ones.
      const label = (number: number) => `${plan.name}#${plan.update ? 'new' : number}`;
      for (const instance of plan.instances)
        print(
          instance.node !== null
            ? `${label(instance.number)} -> ${instance.node}`
            : `${label(instance.number)} cannot be placed: ${instance.reason}`,
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
    .command('logs')
    .description(
      "an instance's output (stdout and stderr, as the node reads them), from its node; with -f, then what it " +
        'writes until it stops',
    )
    .argument(
      '<job>',
      'job id or name, with #n for instance n (default: its lowest-numbered running one): web#2',
    )
    .option('-f, --follow', 'keep printing what it writes, until it stops or edgectl is interrupted')
    .option('--tail <lines>', 'the last lines only (native: of each of stdout and stderr), or all', parseTail)
    .option(
      '--since <when>',
      "from then on: a duration back (90s, 10m, 2h, 7d, by the node's clock), an RFC 3339 time or epoch ms",
      parseSince,
    )
    .addOption(new Option('--stream <stream>', 'one stream only').choices(['stdout', 'stderr']))
    .action(
      async (
        target: string,
        options: { follow?: boolean; tail?: number | 'all'; since?: string; stream?: 'stdout' | 'stderr' },
      ) => {
        const ref = parseInstanceRef(target);
        const job = ref.job;
        // Without #n: the lowest-numbered running instance (numbers change with roll-outs), else the first placed.
        const instance = ref.instance ?? defaultInstance(await client().getJob(job));
        const body = await client().openLogs(
          job,
          instance,
          {
            follow: options.follow ?? false,
            ...(options.tail !== undefined ? { tail: options.tail } : {}),
            ...(options.since !== undefined ? { since: options.since } : {}),
            ...(options.stream !== undefined ? { stream: options.stream } : {}),
          },
          io.signal,
        );
        const reader = body.getReader();
        const decoder = new TextDecoder();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            io.stdout(decoder.decode(value, { stream: true }));
            await io.stdoutDrained?.();
          }
        } catch {
          if (io.signal?.aborted) return;
          // The cluster manager wrote why as the output's last line.
          throw new NotAchieved('the log stream broke off before its end');
        }
        io.stdout(decoder.decode());
      },
    );

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

  /** Starts a drain; with `wait`, follows it until nothing runs on the node (or something cannot move). */
  async function drainNode(api: ApiClient, ref: string, wait: boolean, timeout: number) {
    const remaining = async (id: string) =>
      ((await api.getNode(id)).instances as { status: string }[]).filter(
        (instance) => instance.status !== 'stopping' && instance.status !== 'stopped',
      ).length;
    let left = await remaining(ref);
    const node = await api.drainNode(ref);
    print(`node ${node.name} draining: ${left} instance(s) to move`);
    if (!wait) return;
    const deadline = io.now() + timeout * 1000;
    for (;;) {
      const now = await api.getNode(node.id);
      if (!now.draining) {
        print(`node ${node.name} drained`);
        return;
      }
      const count = await remaining(node.id);
      if (count !== left) {
        left = count;
        print(`node ${node.name}: ${left} instance(s) left`);
      }
      if (io.now() >= deadline) {
        const [blocked] = await api.listEvents({ type: 'drain.blocked', node: node.id, limit: 1 });
        throw new NotAchieved(
          `node ${node.name} not drained after ${timeout} s${blocked ? `: ${blocked.message}` : ''}`,
        );
      }
      await pause();
    }
  }

  /** Prints where each instance went, or why it waits; with `wait`, follows them until all run (or cannot). */
  async function followInstances(api: ApiClient, created: Job, wait: boolean, timeout: number) {
    let job = created;
    // What the answer already says (where each instance goes, or why it waits), with or without --wait.
    const seen = new Map<number, string>();
    for (const line of progressLines(job, seen)) print(line);
    if (!wait) return;
    const deadline = io.now() + timeout * 1000;
    for (;;) {
      const outcome = outcomeOf(job);
      if (outcome.done === 'running') {
        print(`job ${job.name}: every instance is running`);
        return;
      }
      if (outcome.done === 'cannot run') throw new NotAchieved(`cannot run: ${outcome.reason}`);
      if (io.now() >= deadline)
        throw new NotAchieved(`still not running after ${timeout} s; see edgectl job ${job.name}`);
      await pause();
      job = await api.getJob(job.id);
      for (const line of progressLines(job, seen)) print(line);
    }
  }

  /** Follows the roll-out of `version`, printing its progress and each instance's, until it ends. */
  async function followRollout(api: ApiClient, updated: Job, version: number, timeout: number) {
    let job = updated;
    const seen = new Map<number, string>();
    let progress = '';
    const deadline = io.now() + timeout * 1000;
    for (;;) {
      for (const line of progressLines(job, seen)) print(line);
      const outcome = rolloutOutcomeOf(job, version);
      if (outcome.done === 'succeeded') {
        print(`job ${job.name}: version ${version} rolled out`);
        return;
      }
      if (outcome.done === 'failed') {
        const [failure] = await api.listEvents({ type: 'rollout.failed', job: job.id, limit: 1 });
        throw new NotAchieved(`roll-out failed: ${outcome.reason}${failure ? ` (${failure.message})` : ''}`);
      }
      if (outcome.progress !== progress) {
        progress = outcome.progress;
        print(`job ${job.name} version ${version}: ${progress}`);
      }
      if (io.now() >= deadline)
        throw new NotAchieved(`roll-out not done after ${timeout} s; see edgectl job ${job.name}`);
      await pause();
      job = await api.getJob(job.id);
    }
  }

  addConfigCommands(program, io);
  return program;
}

/** The instance `logs <job>` reads: the lowest-numbered running one, else the lowest-numbered placed one. */
export function defaultInstance(job: Job): number {
  const byNumber = [...job.instances].sort((a, b) => a.number - b.number);
  const chosen =
    byNumber.find((instance) => instance.status === 'running') ??
    byNumber.find((instance) => instance.nodeId !== null);
  if (!chosen)
    throw new NotAchieved(`job ${job.name} has no instance on a node yet (edgectl job ${job.name})`);
  return chosen.number;
}

/** The `name` a job spec file gives, for finding the job it updates. */
function nameOf(spec: unknown): string {
  const name = (spec as { name?: unknown } | null)?.name;
  if (typeof name !== 'string' || name.length === 0)
    throw new UsageError('the job spec has no name (a job is applied by its name)');
  return name;
}

function outputOption(defaultFormat: OutputFormat): Option {
  const choices = defaultFormat === 'table' ? ['table', 'yaml', 'json'] : ['yaml', 'json'];
  return new Option('-o, --output <format>', 'output format').choices(choices).default(defaultFormat);
}

function createClient(flags: ConnectionFlags, io: EdgectlIo): ApiClient {
  const loaded = loadConfig(io.env);
  if (loaded.warning) io.stderr(`edgectl: warning: ${loaded.warning}\n`);
  const { server, token, ca } = resolveConnection(flags, io.env, loaded);
  return new ApiClient({ server, token, fetch: io.fetch ?? trustedFetch(ca) });
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

function parseTail(value: string): number | 'all' {
  if (value === 'all') return value;
  const lines = parseWholeNumber(value);
  if (lines > MAX_LOG_TAIL) throw new InvalidArgumentError(`at most ${MAX_LOG_TAIL}`);
  return lines;
}

function parseSince(value: string): string {
  const parsed = parseLogSince(value);
  if ('problem' in parsed) throw new InvalidArgumentError(parsed.problem);
  return value.trim();
}

/** `web`, `web#2`: a job id or name and an instance number (0 when none is given). */
export function parseInstanceRef(value: string): { job: string; instance?: number } {
  const at = value.lastIndexOf('#');
  if (at < 0) return { job: value };
  const number = value.slice(at + 1);
  if (at === 0 || !/^\d{1,6}$/.test(number))
    throw new UsageError(`"${value}" is not <job> or <job>#<instance number> (web, web#2)`);
  return { job: value.slice(0, at), instance: Number(number) };
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
