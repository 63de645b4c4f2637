import { createServer, type Server, type Socket } from 'node:net';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { Logger } from '../../shared/index.js';
import { type MqttPrincipal, mayPublish, maySubscribe } from './acl.js';

export type Authenticator = (
  username: string | undefined,
  password: string | undefined,
) => MqttPrincipal | null;

const principals = new WeakMap<Client, MqttPrincipal>();

function refused(): AuthenticateError {
  const error = new Error('bad username or password') as AuthenticateError;
  error.returnCode = 4 as AuthenticateError['returnCode'];
  return error;
}

/** The embedded aedes broker: anonymous clients refused, per-node topic ACLs, TCP_NODELAY on. */
export class EmbeddedBroker {
  private constructor(
    private readonly aedes: Aedes,
    private readonly server: Server,
  ) {}

  static async start(options: {
    port: number;
    host: string;
    authenticate: Authenticator;
    logger: Logger;
  }): Promise<EmbeddedBroker> {
    const { logger } = options;
    const aedes = await Aedes.createBroker({
      authenticate(client, username, password, done) {
        const principal = options.authenticate(username, password?.toString());
        if (!principal) {
          logger.warn({ clientId: client.id, username }, 'mqtt login refused');
          done(refused(), false);
          return;
        }
        principals.set(client, principal);
        done(null, true);
      },
      authorizePublish(client, packet, callback) {
        const principal = client ? principals.get(client) : undefined;
        if (!client) return callback(null);
        if (principal && mayPublish(principal, packet.topic)) return callback(null);
        callback(new Error(`publish to ${packet.topic} not allowed`));
      },
      authorizeSubscribe(client, subscription, callback) {
        const principal = principals.get(client);
        if (principal && maySubscribe(principal, subscription.topic)) return callback(null, subscription);
        logger.warn({ clientId: client.id, topic: subscription.topic }, 'mqtt subscribe refused');
        // A null subscription answers the client with a failure code instead of closing it.
        callback(null, null);
      },
    });
    aedes.on('clientError', (client, error) =>
      logger.debug({ clientId: client.id, err: error.message }, 'mqtt client error'),
    );
    const server = createServer({ noDelay: true }, (socket: Socket) => {
      socket.setNoDelay(true);
      aedes.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port, options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new EmbeddedBroker(aedes, server);
  }

  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address ? address.port : 0;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
