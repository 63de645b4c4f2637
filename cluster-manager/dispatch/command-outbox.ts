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

/**
 * Commands go to the outbox table in the same transaction as the state change that caused them, then are
 * published QoS 1 and re-sent until the node acks (also after a restart of the cluster manager).
 */
export class CommandOutbox {
  private timer: NodeJS.Timeout | undefined;
  private mqtt: MqttClient | undefined;
  /** Commands sent by this process: one sent before a restart is due again at once. */
  private readonly sentHere = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly clusterId: string,
    private readonly isOnline: (nodeId: string) => boolean,
    private readonly logger: Logger,
  ) {}

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
    this.timer ??= setInterval(() => this.flush(), 1000);
  }

  /** Sends what is due: never sent, or unacked past its retry delay. Only to nodes that are online. */
  flush(now = Date.now()): void {
    if (!this.mqtt?.connected) return;
    for (const record of this.store.commands.unacked()) {
      if (!this.isOnline(record.nodeId)) continue;
      const recent = record.sentAt !== null && now - record.sentAt < retryDelay(record.attempts);
      if (recent && this.sentHere.has(record.id)) continue;
      this.send(record, now);
    }
  }

  /** A node came back: everything it has not acked goes out at once. */
  resendTo(nodeId: string, now = Date.now()): void {
    if (!this.mqtt?.connected) return;
    for (const record of this.store.commands.unacked(nodeId)) this.send(record, now);
  }

  /** An ack arrived: the command leaves the outbox. */
  acked(id: string): void {
    this.sentHere.delete(id);
  }

  private send(record: CommandRecord, now: number): void {
    this.sentHere.add(record.id);
    this.store.commands.markSent(record.id, now);
    this.mqtt?.publish(topics.control(record.nodeId), JSON.stringify(record.payload), { qos: 1 }, (error) => {
      if (error)
        this.logger.warn({ command: record.id, err: error.message }, 'command publish failed; will retry');
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
