import { io, type Socket } from 'socket.io-client';
import {
  backoffDelay,
  describeConnectError,
  describeProblems,
  type Logger,
  type MqttLogin,
  type NodeInfo,
  type NodeRegistrationAuth,
  newNodeSecret,
  RegisterAckSchema,
  type Rendezvous,
  TrustError,
  trustClusterManager,
} from '../shared/index.js';
import { type Identity, loadIdentity, saveIdentity } from './identity.js';

/** A successful registration: who this node is and how it reaches the broker. */
export interface Registered {
  nodeId: string;
  nodeSecret: string;
  mqtt: MqttLogin;
  /** The net manager's own broker login, where it has one. */
  netMqtt?: MqttLogin;
  telemetryIntervalMs: number;
  subnet?: string;
  /** Whether the overlay is encrypted (told to the net manager). */
  overlayEncryption?: boolean;
  /** The cluster manager's UDP rendezvous port (told to the net manager). */
  rendezvous?: Rendezvous;
  /** What this registration announced: whether a net manager answered (so whether it asked for a subnet). */
  overlay: boolean;
}

export type RegistrationState =
  | 'connecting'
  | 'registered'
  | 'refused'
  | 'no-credentials'
  | 'disconnected'
  /** The cluster manager's CA is not the one the join token (or --ca-file) says: nothing was sent to it. */
  | 'untrusted';

export interface RegistrationOptions {
  clusterManagerUrl: string;
  dataDir: string;
  joinToken: string | undefined;
  /** `--ca-file`: the cluster CA, instead of the join token's pin. */
  caFile?: string;
  /** Called on every attempt, so a registration announces what holds now (runtimes, overlay). */
  nodeInfo: () => NodeInfo;
  /** Called after every successful registration (also after a reconnect), once the identity is stored. */
  onRegistered: (registered: Registered) => void | Promise<void>;
  logger: Logger;
  registerTimeoutMs?: number;
}

const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 30_000;

/**
 * Registration on the cluster manager's `/init` Socket.IO namespace. The connection lasts one registration:
 * once the answer is applied it is closed (MQTT carries everything after that), and `registerAgain` opens one
 * when what the node announces changed or its MQTT link says the cluster manager may have. It never gives up
 * while the cluster manager is away. A stored identity is tried first; when the cluster manager refuses it,
 * the join token takes over.
 */
export class NodeRegistration {
  state: RegistrationState = 'connecting';
  identity: Identity | undefined;
  private socket: Socket | undefined;
  private useIdentity = true;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  /** From a connection attempt until its registration is applied (or failed). */
  private inFlight = false;
  /** `registerAgain` was called while a registration was in flight: one more follows it. */
  private again = false;
  /** The connection is being closed after a registration: its `disconnect` is no failure. */
  private closing = false;
  private readonly logger: Logger;

  constructor(private readonly options: RegistrationOptions) {
    this.logger = options.logger.child({ part: 'registration', url: options.clusterManagerUrl });
  }

  /** The stored identity, read before `start` so the node can run its workloads before the CM answers. */
  async loadIdentity(): Promise<Identity | undefined> {
    this.identity = await loadIdentity(this.options.dataDir);
    return this.identity;
  }

  start(): void {
    this.started = true;
    this.connect();
  }

  /**
   * The Socket.IO connection, made once the cluster manager is trusted: its CA is the one the join token pins
   * (fetched and stored at the first join), the stored one, or `--ca-file`'s.
   */
  private async openSocket(): Promise<void> {
    let ca: string | undefined;
    try {
      ca = await trustClusterManager({
        url: this.options.clusterManagerUrl,
        joinToken: this.options.joinToken,
        dataDir: this.options.dataDir,
        caFile: this.options.caFile,
        logger: this.logger,
      });
    } catch (error) {
      if (error instanceof TrustError) {
        this.state = 'untrusted';
        this.logger.error({ err: error.message }, 'not trusting the cluster manager; retrying');
      } else {
        this.logger.warn({ err: (error as Error).message }, 'cannot reach the cluster manager; retrying');
      }
      this.retry();
      return;
    }
    if (this.stopped || this.socket) return;
    if (!this.identity) {
      // The node's own secret, on disk before anyone hears it: with it, a join whose answer is lost can be
      // made again under the same name.
      const identity = { nodeSecret: newNodeSecret() };
      try {
        await saveIdentity(this.options.dataDir, identity);
      } catch (error) {
        this.logger.error({ err: (error as Error).message }, 'cannot store the node secret; retrying');
        this.retry();
        return;
      }
      this.identity = identity;
    }
    this.socket = io(`${this.options.clusterManagerUrl}/init`, {
      transports: ['websocket'],
      // Reconnects are ours: the credentials may change between attempts, and the backoff is the project's.
      reconnection: false,
      autoConnect: false,
      timeout: 10_000,
      ca,
      auth: (callback) => callback(this.auth() ?? {}),
    });
    this.socket.on('connect', () => this.register());
    this.socket.on('connect_error', (error) => this.connectFailed(error));
    this.socket.on('disconnect', (reason) => {
      if (this.stopped || this.closing) return;
      this.state = 'disconnected';
      this.logger.warn({ reason }, 'disconnected from the cluster manager');
      this.retry();
    });
    this.socket.connect();
  }

  /**
   * Registers again: what the node announces changed (a runtime, a net manager), or the cluster manager may
   * have (its MQTT link came back or keeps failing). One registration at a time; a call during one is
   * answered by another right after it.
   */
  registerAgain(): void {
    if (this.stopped || !this.started) return;
    if (this.inFlight || this.timer) {
      this.again = true;
      return;
    }
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.disconnect();
    this.socket?.removeAllListeners();
  }

  private auth(): NodeRegistrationAuth | undefined {
    if (this.useIdentity && this.identity?.nodeId) {
      return { nodeId: this.identity.nodeId, nodeSecret: this.identity.nodeSecret };
    }
    if (!this.options.joinToken) return undefined;
    return this.identity
      ? { token: this.options.joinToken, nodeSecret: this.identity.nodeSecret }
      : { token: this.options.joinToken };
  }

  private connect(): void {
    if (this.stopped) return;
    this.inFlight = true;
    this.again = false;
    if (!this.auth()) {
      this.state = 'no-credentials';
      this.logger.error(
        'cannot register: no stored identity and no join token (pass --join-token or JOIN_TOKEN)',
      );
      this.retry();
      return;
    }
    this.state = 'connecting';
    this.closing = false;
    if (this.socket) this.socket.connect();
    else void this.openSocket();
  }

  private retry(): void {
    this.inFlight = false;
    if (this.stopped || this.timer) return;
    const delay = backoffDelay(this.attempt++, RETRY_BASE_MS, RETRY_MAX_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.connect();
    }, delay);
  }

  private connectFailed(error: Error): void {
    if (error.message === 'unauthorized' && this.useIdentity && this.identity?.nodeId) {
      this.useIdentity = false;
      if (this.options.joinToken) {
        this.logger.warn(
          { nodeId: this.identity.nodeId },
          'the cluster manager refused the stored identity: joining with the join token',
        );
        this.attempt = 0;
      } else {
        this.logger.error(
          { nodeId: this.identity.nodeId },
          'the cluster manager refused the stored identity and no join token was given (pass --join-token); retrying',
        );
      }
    } else if (error.message === 'unauthorized') {
      this.state = 'refused';
      this.logger.error('the cluster manager refused the join token; retrying');
      // A refused token may become valid (an operator fixes it); the stored identity is worth another try too.
      this.useIdentity = true;
    } else {
      this.logger.warn({ err: describeConnectError(error) }, 'cannot reach the cluster manager; retrying');
    }
    this.retry();
  }

  private register(): void {
    const socket = this.socket;
    if (!socket) return;
    const info = this.options.nodeInfo();
    socket
      .timeout(this.options.registerTimeoutMs ?? 10_000)
      .emit(
        'register',
        info,
        (error: Error | null, ack: unknown) => void this.registered(error, ack, info.overlay),
      );
  }

  private async registered(error: Error | null, ack: unknown, overlay: boolean): Promise<void> {
    if (error) {
      this.logger.warn('no answer to register; reconnecting');
      this.socket?.disconnect();
      this.retry();
      return;
    }
    const parsed = RegisterAckSchema.safeParse(ack);
    if (!parsed.success || 'error' in parsed.data) {
      this.state = 'refused';
      const reason =
        parsed.success && 'error' in parsed.data ? parsed.data.error : describeProblems(parsed.error!);
      this.logger.error({ reason }, 'registration refused; retrying');
      this.socket?.disconnect();
      this.retry();
      return;
    }
    const registered: Registered = { ...parsed.data, overlay };
    if (registered.nodeId !== this.identity?.nodeId || registered.nodeSecret !== this.identity.nodeSecret) {
      try {
        await saveIdentity(this.options.dataDir, {
          nodeId: registered.nodeId,
          nodeSecret: registered.nodeSecret,
        });
      } catch (saveError) {
        this.logger.error({ err: (saveError as Error).message }, 'cannot store the node identity; retrying');
        this.socket?.disconnect();
        this.retry();
        return;
      }
      this.identity = { nodeId: registered.nodeId, nodeSecret: registered.nodeSecret };
    }
    this.useIdentity = true;
    this.attempt = 0;
    this.state = 'registered';
    this.logger.info({ nodeId: registered.nodeId }, 'registered with the cluster manager');
    try {
      await this.options.onRegistered(registered);
    } catch (callbackError) {
      this.logger.error({ err: (callbackError as Error).message }, 'cannot apply the registration');
    }
    if (this.stopped) return;
    if (this.again && this.socket?.connected) {
      this.again = false;
      this.register();
      return;
    }
    // Nothing needs the connection until the next registration: a second permanent connection beside MQTT costs
    // memory on the node and a socket on the cluster manager for each node of the fleet.
    this.closing = true;
    this.socket?.disconnect();
    this.inFlight = false;
    if (this.again) this.registerAgain();
  }
}
