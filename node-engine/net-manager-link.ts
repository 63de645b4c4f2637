import { stat } from 'node:fs/promises';
import { request } from 'node:http';
import {
  ApiErrorBodySchema,
  type AttachRequest,
  AttachResponseSchema,
  describeProblems,
  type Logger,
  type NetManagerStatus,
  NetManagerStatusSchema,
  type NodeHandover,
} from '../shared/index.js';

interface Reply {
  status: number;
  body: unknown;
}

/** A call the net manager refused or could not answer, with its reason and the error code it sent. */
export class NetManagerCallError extends Error {
  override name = 'NetManagerCallError';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

/**
 * The node engine's side of the net manager's local API (HTTP over its unix socket). The overlay is on while
 * a net manager (the one with `bootId`) holds the node's registration with a subnet; without a socket the
 * node runs with the overlay off, and says so once.
 */
export class NetManagerLink {
  private saidMissing = false;
  private saidUnreadable = false;
  private lastBootId: string | undefined;

  constructor(
    private readonly socketPath: string,
    private readonly logger: Logger,
  ) {}

  get overlay(): boolean {
    return this.lastBootId !== undefined;
  }

  /** The boot id of the net manager that took the last registration: a new one must be told everything again. */
  get bootId(): string | undefined {
    return this.lastBootId;
  }

  /** The net manager's status, or undefined when none answers (or its answer cannot be read). */
  async status(): Promise<NetManagerStatus | undefined> {
    if (!(await this.present())) return undefined;
    try {
      const reply = await this.call('GET', '/v1/status');
      return reply.status === 200 ? this.readStatus(reply.body) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Hands the net manager what it needs after a registration; the overlay is on only if it accepted it. */
  async handOver(handover: NodeHandover): Promise<boolean> {
    const wasOn = this.overlay;
    this.lastBootId = await this.register(handover);
    if (this.overlay && !wasOn) this.logger.info({ subnet: handover.subnet }, 'overlay on');
    return this.overlay;
  }

  /** The boot id of the net manager that took the registration, or undefined when none did. */
  private async register(handover: NodeHandover): Promise<string | undefined> {
    // Without a subnet there is nothing for the net manager to route.
    if (handover.subnet === undefined) return undefined;
    if (!(await this.present())) {
      if (!this.saidMissing) {
        this.logger.warn(
          { socket: this.socketPath },
          'no net manager at this socket: running with the overlay off',
        );
        this.saidMissing = true;
      }
      return undefined;
    }
    this.saidMissing = false;
    try {
      const reply = await this.call('POST', '/v1/node', handover);
      if (reply.status >= 200 && reply.status < 300) return this.readStatus(reply.body)?.bootId;
      this.logger.warn({ status: reply.status, body: reply.body }, 'overlay off: net manager refused');
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'cannot reach the net manager: overlay off');
    }
    return undefined;
  }

  /** Joins a running container to the overlay; resolves to its namespace IP. */
  async attach(attachment: AttachRequest): Promise<string> {
    const reply = await this.call('POST', '/v1/attach', attachment);
    const parsed = AttachResponseSchema.safeParse(reply.body);
    if (reply.status !== 200 || !parsed.success) throw callError(reply);
    return parsed.data.namespaceIp;
  }

  async detach(containerId: string): Promise<void> {
    const reply = await this.call('POST', '/v1/detach', { containerId });
    if (reply.status >= 300) throw callError(reply);
  }

  private async present(): Promise<boolean> {
    try {
      return (await stat(this.socketPath)).isSocket();
    } catch {
      return false;
    }
  }

  /** A status that does not parse counts as no net manager; said once until one parses again. */
  private readStatus(body: unknown): NetManagerStatus | undefined {
    const parsed = NetManagerStatusSchema.safeParse(body);
    if (parsed.success) {
      this.saidUnreadable = false;
      return parsed.data;
    }
    if (!this.saidUnreadable) {
      this.logger.warn(
        { socket: this.socketPath, problems: describeProblems(parsed.error) },
        'cannot read the net manager status: running as if none answered',
      );
      this.saidUnreadable = true;
    }
    return undefined;
  }

  private call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method,
          headers: body === undefined ? {} : { 'content-type': 'application/json' },
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = text;
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('net manager did not answer within 10 s')));
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  }
}

function callError(reply: Reply): NetManagerCallError {
  const parsed = ApiErrorBodySchema.safeParse((reply.body as { error?: unknown } | undefined)?.error);
  const error = parsed.success ? parsed.data : undefined;
  return new NetManagerCallError(
    `net manager answered ${reply.status}${error ? `: ${error.message}` : ''}`,
    error?.code,
  );
}
