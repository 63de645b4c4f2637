import { stat } from 'node:fs/promises';
import { request } from 'node:http';
import {
  type AttachRequest,
  AttachResponseSchema,
  type Logger,
  type NetManagerStatus,
  type NodeHandover,
} from '../shared/index.js';

export type NetManagerRegistration = NodeHandover;

interface Reply {
  status: number;
  body: unknown;
}

/** A call the net manager refused or could not answer, with its reason. */
export class NetManagerCallError extends Error {
  override name = 'NetManagerCallError';
}

/**
 * The node engine's side of the net manager's local API (HTTP over its unix socket). The overlay is on once
 * the net manager took the node's registration with a subnet; without a socket the node runs with the overlay
 * off, and says so once.
 */
export class NetManagerLink {
  private overlayOn = false;
  private saidMissing = false;
  private lastBootId: string | undefined;

  constructor(
    private readonly socketPath: string,
    private readonly logger: Logger,
  ) {}

  get overlay(): boolean {
    return this.overlayOn;
  }

  /** The boot id of the net manager that took the last registration: a new one must be told everything again. */
  get bootId(): string | undefined {
    return this.lastBootId;
  }

  async present(): Promise<boolean> {
    try {
      return (await stat(this.socketPath)).isSocket();
    } catch {
      return false;
    }
  }

  /** The net manager's status, or undefined when none answers. */
  async status(): Promise<NetManagerStatus | undefined> {
    if (!(await this.present())) return undefined;
    try {
      const reply = await this.call('GET', '/v1/status');
      return reply.status === 200 ? (reply.body as NetManagerStatus) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Hands the net manager what it needs after a registration; the overlay is on only if it accepted it. */
  async handOver(registration: NetManagerRegistration): Promise<boolean> {
    if (!(await this.present())) {
      if (!this.saidMissing) {
        this.logger.warn(
          { socket: this.socketPath },
          'no net manager at this socket: running with the overlay off',
        );
        this.saidMissing = true;
      }
      this.overlayOn = false;
      return false;
    }
    try {
      const reply = await this.call('POST', '/v1/node', registration);
      const accepted = reply.status >= 200 && reply.status < 300 && registration.subnet !== undefined;
      if (!accepted)
        this.logger.warn({ status: reply.status, body: reply.body }, 'overlay off: net manager refused');
      if (accepted && !this.overlayOn) this.logger.info({ subnet: registration.subnet }, 'overlay on');
      this.overlayOn = accepted;
      this.lastBootId = accepted ? (reply.body as NetManagerStatus).bootId : undefined;
      this.saidMissing = false;
    } catch (error) {
      this.overlayOn = false;
      this.logger.warn({ err: (error as Error).message }, 'cannot reach the net manager: overlay off');
    }
    return this.overlayOn;
  }

  /** Joins a running container to the overlay; resolves to its namespace IP. */
  async attach(attachment: AttachRequest): Promise<string> {
    const reply = await this.call('POST', '/v1/attach', attachment);
    const parsed = AttachResponseSchema.safeParse(reply.body);
    if (reply.status !== 200 || !parsed.success) throw new NetManagerCallError(describe(reply));
    return parsed.data.namespaceIp;
  }

  async detach(containerId: string): Promise<void> {
    const reply = await this.call('POST', '/v1/detach', { containerId });
    if (reply.status >= 300) throw new NetManagerCallError(describe(reply));
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

function describe(reply: Reply): string {
  const error = (reply.body as { error?: { message?: string } } | undefined)?.error;
  return `net manager answered ${reply.status}${error?.message ? `: ${error.message}` : ''}`;
}
