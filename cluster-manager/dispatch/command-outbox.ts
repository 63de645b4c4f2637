import { randomUUID } from 'node:crypto';
import type {
  Command,
  CommandKind,
  InstanceNetwork,
  JobDefinition,
  Logger,
  MqttClient,
} from '../../shared/index.js';
import { topics } from '../../shared/index.js';
import type { CommandRecord, Store } from '../store/index.js';

export interface NewCommand {
  kind: CommandKind;
  job: JobDefinition;
  instance: number;
  generation: number;
  /** `move`: [from, to]; otherwise the target node. */
  worker: string[];
}

const FIRST_RETRY_MS = 2000;
const MAX_RETRY_MS = 30_000;

/** How long to wait for an ack before sending a command again. */
export function retryDelay(attempts: number): number {
  return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, attempts - 1));
}

/** An unacked command as the outbox keeps it in memory: what sending it again needs, nothing more. */
interface PendingCommand {
  id: string;
  nodeId: string;
  /** `jobId/instance`, for "is something on its way to this instance?" */
  target: string;
  json: string;
  sentAt: number | null;
  attempts: number;
  /** Sent by this process: one sent before a restart is due again at once. */
  sentHere: boolean;
  /** On disk: a node never hears of a command (and the state behind it) that a power cut could take back. */
  durable: boolean;
}

/**
 * Commands go to the outbox table in the same transaction as the state change that caused them, then are
 * published QoS 1 and re-sent until the node acks (also after a restart of the cluster manager).
 *
 * The unacked ones are also held in memory, by id and by node, so that sending, re-sending and counting never
 * read and parse the table: a command enqueued is admitted from SQLite once its transaction committed (one that
 * rolled back is never seen), and leaves when its node acks it. Send times are written for a whole batch in one
 * transaction.
 */
export class CommandOutbox {
  private timer: NodeJS.Timeout | undefined;
  private mqtt: MqttClient | undefined;
  private readonly pending = new Map<string, PendingCommand>();
  private readonly byNode = new Map<string, Set<string>>();
  /** Enqueued since the last flush; admitted once committed. */
  private readonly fresh: string[] = [];

  constructor(
    private readonly store: Store,
    private readonly clusterId: string,
    private readonly isOnline: (nodeId: string) => boolean,
    private readonly logger: Logger,
  ) {
    for (const record of store.commands.unacked()) this.admit(record).durable = true;
  }

  /**
   * Call inside the transaction that changes the state, after the instance row is written; `flush()` after it
   * commits. Commands that run an instance carry its overlay addresses, read from the job and instance rows.
   */
  enqueue(nodeId: string, command: NewCommand, now = Date.now()): Command {
    const network = command.kind === 'delete' ? undefined : this.networkOf(command.job.id, command.instance);
    const message: Command = {
      id: randomUUID(),
      command: command.kind,
      job: command.job,
      instance: command.instance,
      generation: command.generation,
      cluster: [this.clusterId],
      worker: command.worker,
      issuedAt: now,
      ...(network ? { network } : {}),
    };
    this.store.commands.insert(message, nodeId, now);
    this.fresh.push(message.id);
    this.store.events.record(
      'command',
      `${command.kind} ${command.job.name}#${command.instance} to ${this.store.nodes.nameOf(nodeId)}`,
      {
        nodeId,
        jobId: command.job.id,
      },
    );
    return message;
  }

  /** Queues `delete` of one instance (at the generation the node has it) or, with -1, of the whole job. */
  enqueueDelete(nodeId: string, job: JobDefinition, instance: number, generation: number): Command {
    return this.enqueue(nodeId, { kind: 'delete', job, instance, generation, worker: [nodeId] });
  }

  private networkOf(jobId: string, number: number): InstanceNetwork | undefined {
    const serviceIp = this.store.jobs.getJob(jobId)?.serviceIp;
    const instanceIp = this.store.jobs.getInstance(jobId, number)?.instanceIp;
    return serviceIp && instanceIp ? { instanceIp, serviceIp } : undefined;
  }

  attach(mqtt: MqttClient): void {
    this.mqtt = mqtt;
    this.timer ??= setInterval(() => this.retry(), 1000);
  }

  /**
   * Sends the commands enqueued since the last flush (call after their transaction committed), as soon as that
   * commit is on disk (Store.durable: one fsync for all of the moment).
   */
  flush(): void {
    const admitted = this.admitFresh();
    if (admitted.length === 0) return;
    this.store.durable().then(
      () => {
        if (!this.mqtt?.connected) return;
        this.sendAll(
          admitted.filter((command) => this.pending.has(command.id) && this.isOnline(command.nodeId)),
          Date.now(),
        );
      },
      () => {}, // logged by admitFresh: a disk that cannot fsync gets no command out
    );
  }

  /** Sends everything due: never sent, or unacked past its retry delay. Only to nodes that are online. */
  retry(now = Date.now()): void {
    this.admitFresh();
    if (!this.mqtt?.connected) return;
    const due: PendingCommand[] = [];
    for (const command of this.pending.values()) {
      if (!command.durable || !this.isOnline(command.nodeId)) continue;
      const recent = command.sentAt !== null && now - command.sentAt < retryDelay(command.attempts);
      if (!recent || !command.sentHere) due.push(command);
    }
    this.sendAll(due, now);
  }

  /** A node came back: everything it has not acked goes out at once. */
  resendTo(nodeId: string, now = Date.now()): void {
    this.admitFresh();
    if (!this.mqtt?.connected) return;
    const ids = this.byNode.get(nodeId) ?? new Set<string>();
    this.sendAll(
      [...ids].map((id) => this.pending.get(id)!).filter((command) => command.durable),
      now,
    );
  }

  /** The node acked: the command leaves the outbox (an ack from another node than its own changes nothing). */
  acked(id: string, nodeId: string): void {
    const command = this.pending.get(id);
    if (!command || command.nodeId !== nodeId) return;
    this.pending.delete(id);
    const ids = this.byNode.get(nodeId);
    ids?.delete(id);
    if (ids?.size === 0) this.byNode.delete(nodeId);
  }

  /** The node was removed (its commands are gone from the store): nothing goes to it any more. */
  forgetNode(nodeId: string): void {
    for (const id of this.byNode.get(nodeId) ?? []) this.pending.delete(id);
    this.byNode.delete(nodeId);
  }

  /** Commands waiting for an ack. */
  get unackedCount(): number {
    this.admitFresh();
    return this.pending.size;
  }

  /** Whether a command for this instance is on its way to the node (sent or not, unacked). */
  hasPendingFor(nodeId: string, jobId: string, instance: number): boolean {
    this.admitFresh();
    const target = `${jobId}/${instance}`;
    for (const id of this.byNode.get(nodeId) ?? []) if (this.pending.get(id)?.target === target) return true;
    return false;
  }

  /** Admits the commands enqueued since last time that committed; they count as durable once the WAL is synced. */
  private admitFresh(): PendingCommand[] {
    if (this.fresh.length === 0) return [];
    const admitted: PendingCommand[] = [];
    for (const id of this.fresh.splice(0)) {
      const record = this.pending.has(id) ? undefined : this.store.commands.get(id);
      if (record && record.ackedAt === null) admitted.push(this.admit(record));
    }
    if (admitted.length > 0)
      this.store.durable().then(
        () => {
          for (const command of admitted) command.durable = true;
        },
        (error: Error) => this.logger.error({ err: error.message }, 'cannot make commands durable'),
      );
    return admitted;
  }

  private admit(record: CommandRecord): PendingCommand {
    const command: PendingCommand = {
      id: record.id,
      nodeId: record.nodeId,
      target: `${record.jobId}/${record.instance}`,
      json: JSON.stringify(record.payload),
      sentAt: record.sentAt,
      attempts: record.attempts,
      sentHere: false,
      durable: false,
    };
    this.pending.set(command.id, command);
    const ids = this.byNode.get(command.nodeId) ?? new Set<string>();
    ids.add(command.id);
    this.byNode.set(command.nodeId, ids);
    return command;
  }

  private sendAll(commands: PendingCommand[], now: number): void {
    if (commands.length === 0) return;
    this.store.transaction(() => {
      for (const command of commands) this.store.commands.markSent(command.id, now);
    });
    for (const command of commands) {
      command.sentAt = now;
      command.attempts++;
      command.sentHere = true;
      this.mqtt?.publish(topics.control(command.nodeId), command.json, { qos: 1 }, (error) => {
        if (error)
          this.logger.warn({ command: command.id, err: error.message }, 'command publish failed; will retry');
      });
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
