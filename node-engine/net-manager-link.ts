import { stat } from 'node:fs/promises';
import { request } from 'node:http';
import type { Logger } from '../shared/index.js';
import type { MqttSettings } from './mqtt-link.js';

export interface NetManagerRegistration {
  nodeId: string;
  mqtt: MqttSettings;
  subnet?: string;
}

/**
 * The node engine's side of the net manager's local API (HTTP over its unix socket). Without a socket the
 * node runs with the overlay off, and says so once.
 */
export class NetManagerLink {
  private overlayOn = false;
  private saidMissing = false;

  constructor(
    private readonly socketPath: string,
    private readonly logger: Logger,
  ) {}

  get overlay(): boolean {
    return this.overlayOn;
  }

  async present(): Promise<boolean> {
    try {
      return (await stat(this.socketPath)).isSocket();
    } catch {
      return false;
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
      const status = await this.post('/v1/node', registration);
      this.overlayOn = status >= 200 && status < 300;
      if (!this.overlayOn)
        this.logger.warn({ status }, 'the net manager refused the registration: overlay off');
    } catch (error) {
      this.overlayOn = false;
      this.logger.warn({ err: (error as Error).message }, 'cannot reach the net manager: overlay off');
    }
    return this.overlayOn;
  }

  private post(path: string, body: unknown): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          timeout: 5000,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('timeout', () => req.destroy(new Error('net manager did not answer within 5 s')));
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  }
}
