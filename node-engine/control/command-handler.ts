import {
  type CommandAck,
  CommandSchema,
  describeProblems,
  type JobDefinition,
  type Logger,
  parseJson,
} from '../../shared/index.js';
import type { DesiredStateStore } from '../state/desired-state.js';

export interface CommandHandlerOptions {
  store: DesiredStateStore;
  /** Why this node does not run the job (its host allowances), or null: a refused command is acked `ok: false`. */
  refusal?: (job: JobDefinition) => string | null;
  /** Sends an ack on `nodes/<id>/control/ack`. */
  ack: (ack: CommandAck) => void;
  /** Called after a command changed the desired state (the reconciler's trigger). */
  onChange: () => void;
  logger: Logger;
}

/**
 * Turns commands from `nodes/<id>/control` into desired-state changes. Commands are handled one at a time in
 * arrival order; each is acked once durably written (or with an error), never before.
 */
export class CommandHandler {
  private queue: Promise<void> = Promise.resolve();
  private readonly logger: Logger;

  constructor(private readonly options: CommandHandlerOptions) {
    this.logger = options.logger.child({ part: 'commands' });
  }

  /** Takes a raw MQTT payload; anything malformed is logged and dropped. Resolves when it is handled. */
  handle(payload: Buffer | string): Promise<void> {
    const next = this.queue.then(() => this.process(payload));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async process(payload: Buffer | string): Promise<void> {
    const json = parseJson(payload);
    const parsed = CommandSchema.safeParse(json);
    if (!parsed.success) {
      const problems = json === undefined ? 'not JSON' : describeProblems(parsed.error);
      this.logger.warn({ problems }, 'dropped a malformed command');
      // With a readable id, say no: the sender stops redelivering a command that can never be applied.
      const id = (json as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string' && id.length > 0 && id.length <= 128) {
        this.options.ack({
          id,
          ok: false,
          error: { code: 'invalid_command', message: problems.slice(0, 1000) },
        });
      }
      return;
    }
    const command = parsed.data;
    const log = {
      id: command.id,
      command: command.command,
      job: command.job.name,
      instance: command.instance,
    };
    const refusal = command.command === 'delete' ? null : (this.options.refusal?.(command.job) ?? null);
    if (refusal) {
      this.logger.warn({ ...log, refusal }, 'command refused: not allowed on this node');
      this.options.ack({ id: command.id, ok: false, error: { code: 'not_allowed', message: refusal } });
      return;
    }
    try {
      const outcome = await this.options.store.apply(command);
      if (outcome.kind === 'duplicate') this.logger.debug(log, 'repeated command acked again');
      else if (outcome.kind === 'stale')
        this.logger.info({ ...log, reason: outcome.reason }, 'stale command ignored');
      else this.logger.info({ ...log, generation: command.generation }, 'command applied');
      this.options.ack({ id: command.id, ok: true });
      if (outcome.kind === 'applied') this.options.onChange();
    } catch (error) {
      // A passing failure (a full disk): no ack at all, so the cluster manager sends it again (with its back-off)
      // and it is applied once it can be written. A refusal would end it there, a delete included.
      this.logger.error(
        { ...log, err: (error as Error).message },
        'cannot write the desired state: command not acked, it will be sent again',
      );
    }
  }
}
