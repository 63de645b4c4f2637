import { type Command, topics } from '../../shared/index.js';
import { TestNode } from './test-node.js';

/**
 * A node that speaks the protocol and does what it is told at once: every command is acked, every `deploy` and
 * `move` reported `running`, every `delete` of one instance reported `stopped`. The cluster manager's decisions
 * (roll-outs, drains) can then be watched command by command, without Docker. `stop()` ends the acting;
 * `close()` on the node ends its connections.
 */
export class ObedientNode {
  private handled = 0;
  private readonly timer: NodeJS.Timeout;

  private constructor(readonly node: TestNode) {
    this.timer = setInterval(() => {
      for (const command of node.commands.slice(this.handled)) this.act(command);
      this.handled = node.commands.length;
    }, 20);
  }

  /** Joins with the join token, or as the node `auth` names (one that joined before). */
  static async join(
    cm: { url: string; joinToken: string; ca?: string },
    name: string,
    options: { cpus?: number; auth?: { nodeId: string; nodeSecret: string } } = {},
  ): Promise<ObedientNode> {
    const node = new TestNode(cm, TestNode.info(name, { cpus: options.cpus ?? 4 }));
    await node.register(options.auth ?? { token: cm.joinToken });
    await node.connectMqtt(true);
    await node.sendTelemetry();
    return new ObedientNode(node);
  }

  get commands(): Command[] {
    return this.node.commands;
  }

  get nodeId(): string {
    return this.node.ack!.nodeId;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.node.close();
  }

  private act(command: Command): void {
    const status =
      command.command === 'delete'
        ? 'stopped'
        : command.command === 'deploy' || command.command === 'move'
          ? 'running'
          : undefined;
    if (!status || command.instance < 0) return;
    void this.node.publish(topics.jobStatus(this.nodeId), {
      job: command.job.id,
      instance: command.instance,
      generation: command.generation,
      status,
      containerId: status === 'running' ? `c-${command.instance}-${command.generation}` : null,
      ts: Date.now(),
    });
  }
}
