import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { backoffDelay, type Logger, sleep } from '../../shared/index.js';
import type { MqttPrincipal } from './acl.js';
import type { BrokerThreadData, FromBrokerThread, ToBrokerThread } from './broker-thread.js';

export type Authenticator = (
  username: string | undefined,
  password: string | undefined,
) => MqttPrincipal | null;

export interface EmbeddedBrokerOptions {
  port: number;
  host: string;
  authenticate: Authenticator;
  /** MQTTS with this certificate and key; plain MQTT without. */
  tls?: { cert: string; key: string };
  logger: Logger;
}

/** A broker thread that ran this long before it died restarts at the shortest back-off again. */
const STABLE_MS = 60_000;
const RESTART_BASE_MS = 500;
const RESTART_MAX_MS = 30_000;
/** How long close() waits for the broker thread to close its clients and exit before it is terminated. */
const CLOSE_TIMEOUT_MS = 10_000;

/**
 * The embedded aedes broker: anonymous clients refused, per-node topic ACLs, TCP_NODELAY on. It runs in a
 * worker thread (broker-thread.ts) so that neither a busy cluster manager stalls it nor a broker failure
 * takes the cluster manager down: a dead broker thread is restarted on the same port, and nodes reconnect.
 */
export class EmbeddedBroker {
  /** The running broker thread; public for tests, which terminate it to see it restarted. */
  worker!: Worker;
  private boundPort = 0;
  private closing = false;
  private restartAttempt = 0;
  private readonly stopping = new AbortController();

  private constructor(private readonly options: EmbeddedBrokerOptions) {}

  static async start(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    const broker = new EmbeddedBroker(options);
    await broker.spawn(options.port);
    return broker;
  }

  /** The port the broker listens on: when asked for port 0, the one it got first, kept across restarts. */
  get port(): number {
    return this.boundPort;
  }

  /** A new server certificate: new connections get it (also after a restart of the thread). */
  updateTls(tls: { cert: string; key: string }): void {
    this.options.tls = tls;
    this.worker.postMessage({ type: 'tls', ...tls } satisfies ToBrokerThread);
  }

  /** Closes these clients' connections now and clears these retained topics (a node was removed). */
  disconnect(clientIds: string[], clearRetained: string[]): void {
    this.worker.postMessage({ type: 'disconnect', clientIds, clearRetained } satisfies ToBrokerThread);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.stopping.abort();
    const worker = this.worker;
    if (worker.threadId < 0) return; // exited already
    const exited = once(worker, 'exit');
    worker.postMessage({ type: 'close' } satisfies ToBrokerThread);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), CLOSE_TIMEOUT_MS);
    });
    if ((await Promise.race([exited, timedOut])) === 'timeout') {
      this.options.logger.warn('mqtt broker thread did not close in time; terminating it');
      await worker.terminate();
    }
    clearTimeout(timer);
  }

  /** Starts a broker thread on `port`; resolves once it listens, rejects if it dies before. */
  private spawn(port: number): Promise<void> {
    const { logger } = this.options;
    const worker = startBrokerThread({
      port,
      host: this.options.host,
      debug: logger.isLevelEnabled('debug'),
      tls: this.options.tls,
    });
    this.worker = worker;
    const startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      let listening = false;
      let failure: Error | undefined;
      worker.on('message', (message: FromBrokerThread) => {
        switch (message.type) {
          case 'listening':
            listening = true;
            if (!this.boundPort) this.boundPort = message.port;
            resolve();
            break;
          case 'authenticate':
            worker.postMessage({
              type: 'authenticated',
              id: message.id,
              principal: this.authenticate(message.username, message.password),
            } satisfies ToBrokerThread);
            break;
          case 'log':
            logger[message.level](message.fields, message.msg);
            break;
        }
      });
      worker.on('messageerror', (error) =>
        logger.error({ err: error }, 'bad message from the mqtt broker thread'),
      );
      worker.on('error', (error) => {
        failure = error;
        if (listening) logger.fatal({ err: error }, 'mqtt broker thread crashed');
      });
      worker.on('exit', (code) => {
        if (!listening) {
          reject(failure ?? new Error(`mqtt broker thread exited with code ${code} before it listened`));
          return;
        }
        if (this.closing) return;
        if (!failure) logger.fatal({ code }, 'mqtt broker thread exited');
        void this.restart(Date.now() - startedAt);
      });
    });
  }

  private async restart(uptimeMs: number): Promise<void> {
    const { logger } = this.options;
    if (uptimeMs >= STABLE_MS) this.restartAttempt = 0;
    while (!this.closing) {
      const delayMs = backoffDelay(this.restartAttempt++, RESTART_BASE_MS, RESTART_MAX_MS);
      logger.warn({ port: this.boundPort, delayMs }, 'restarting the mqtt broker thread');
      await sleep(delayMs, this.stopping.signal);
      if (this.closing) return;
      try {
        await this.spawn(this.boundPort);
        logger.info({ port: this.boundPort }, 'mqtt broker thread restarted');
        return;
      } catch (error) {
        if (this.closing) return;
        logger.fatal({ err: error }, 'mqtt broker thread failed to start');
      }
    }
  }

  /** Answers a login with the cluster manager's authenticator; never logs the password. */
  private authenticate(username: string | undefined, password: string | undefined): MqttPrincipal | null {
    try {
      return this.options.authenticate(username, password);
    } catch (error) {
      this.options.logger.error({ err: error, username }, 'mqtt authentication failed');
      return null;
    }
  }
}

/**
 * Starts broker-thread as a worker. Built (dist/, what production runs), broker-thread.js lies next to this
 * module. Run from the sources (vitest loads the .ts files in-process, and its transform does not reach a worker
 * thread; Node 20 cannot run TypeScript), the built broker-thread.js of the same tree is used: `npm test`
 * builds before it tests.
 */
function startBrokerThread(workerData: BrokerThreadData): Worker {
  const options: WorkerOptions = { workerData };
  const besideThis = new URL('./broker-thread.js', import.meta.url);
  if (existsSync(fileURLToPath(besideThis))) return new Worker(besideThis, options);
  const built = new URL('../../dist/cluster-manager/broker/broker-thread.js', import.meta.url);
  if (existsSync(fileURLToPath(built))) return new Worker(built, options);
  throw new Error(`the mqtt broker thread is not built (${fileURLToPath(built)}): run \`npm run build\``);
}
