/**
 * The embedded broker's own thread (the entry of the Worker that embedded-broker.ts starts): aedes, its TCP
 * server and the topic ACLs run here, on an event loop of their own, so that a busy cluster manager never
 * stalls deliveries, keepalives or last wills. Passwords are checked by the main thread, which holds the
 * node store: each login is a message there and back.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { TlsPort } from '../tls/tls-port.js';
import { type MqttPrincipal, mayPublish, mayRetain, maySubscribe, mayUseClientId } from './acl.js';
import { MAX_MQTT_PACKET_BYTES, PacketSizeGuard } from './packet-size-guard.js';

/** What the main thread gives the broker thread to start with. */
export interface BrokerThreadData {
  port: number;
  host: string;
  /** Whether the main thread's logger takes debug lines: if not, none are sent. */
  debug: boolean;
  /** MQTTS with this certificate and key (PEM); plain MQTT without (`--insecure`). */
  tls?: { cert: string; key: string };
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Messages from the broker thread to the main thread. */
export type FromBrokerThread =
  | { type: 'listening'; port: number }
  | { type: 'authenticate'; id: number; username: string | undefined; password: string | undefined }
  | { type: 'log'; level: LogLevel; fields: Record<string, unknown>; msg: string };

/** Messages from the main thread to the broker thread. */
export type ToBrokerThread =
  | { type: 'authenticated'; id: number; principal: MqttPrincipal | null }
  /** A node was removed: its clients go now, and its retained messages are cleared. */
  | { type: 'disconnect'; clientIds: string[]; clearRetained: string[] }
  /** A renewed server certificate, for the connections from now on. */
  | { type: 'tls'; cert: string; key: string }
  | { type: 'close' };

/**
 * mqemitter delivers at most `concurrency` messages at once and queues the rest; draining that queue
 * recurses (`released` -> `_do`) once per queued message, so a burst that queues a few thousand deliveries
 * overflows the stack (seen with 1,000 nodes and aedes' default of 100, and again with a bound of 10,000 when
 * 10,000 nodes reconnected at once, each republishing its status and its instances'). An in-flight delivery
 * costs only a callback, and a queued one the same memory, so there is no bound: the queue is never used.
 */
const CONCURRENCY = Number.MAX_SAFE_INTEGER;

const port = parentPort;
if (!port) throw new Error('broker-thread is the entry of a worker thread, not a module to import');
const data = workerData as BrokerThreadData;

function send(message: FromBrokerThread): void {
  port!.postMessage(message);
}

function log(level: LogLevel, fields: Record<string, unknown>, msg: string): void {
  if (level === 'debug' && !data.debug) return;
  send({ type: 'log', level, fields, msg });
}

function refused(): AuthenticateError {
  const error = new Error('bad username or password') as AuthenticateError;
  error.returnCode = 4 as AuthenticateError['returnCode'];
  return error;
}

/** CONNACK 2, identifier rejected: the client id is not this login's (see mayUseClientId). */
function foreignClientId(): AuthenticateError {
  const error = new Error('client id not allowed for this login') as AuthenticateError;
  error.returnCode = 2 as AuthenticateError['returnCode'];
  return error;
}

const principals = new WeakMap<Client, MqttPrincipal>();
/**
 * Clients that logged in and wait for the connection of the same client id to be closed (a session takeover,
 * MQTT-3.1.4-2), by client id. That connection's last will is not published: its client is connected again.
 * Wills of a client that reconnects under load after a CONNACK it timed out on would otherwise take a node that
 * is fine offline (seen with 10,000 nodes reconnecting to a broker that just started).
 */
const takingOver = new Map<string, Client>();
/** Logins waiting for the main thread's answer, by request id. */
const logins = new Map<number, (principal: MqttPrincipal | null) => void>();
let lastLogin = 0;

const aedes = await Aedes.createBroker({
  concurrency: CONCURRENCY,
  authenticate(client, username, password, done) {
    const id = ++lastLogin;
    logins.set(id, (principal) => {
      if (!principal) {
        log('warn', { clientId: client.id, username }, 'mqtt login refused');
        done(refused(), false);
        return;
      }
      // Checked before aedes takes over a session of the same id: a refused login disconnects nobody.
      if (!mayUseClientId(principal, client.id)) {
        log('warn', { clientId: client.id, username }, 'mqtt login refused: client id not its own');
        done(foreignClientId(), false);
        return;
      }
      principals.set(client, principal);
      // The cluster manager publishes route tables and commands larger than any node may send.
      if (principal.role === 'cluster-manager') guards.get(client.conn as Socket)?.lift();
      if (connectedClient(client.id)) {
        takingOver.set(client.id, client);
        client.conn.once('close', () => {
          if (takingOver.get(client.id) === client) takingOver.delete(client.id);
        });
      }
      done(null, true);
    });
    send({ type: 'authenticate', id, username, password: password?.toString() });
  },
  authorizePublish(client, packet, callback) {
    const principal = client ? principals.get(client) : undefined;
    if (!client) return callback(null);
    if (cutOff.has(client.id)) return callback(new Error('removed'));
    if (isTakenOverWill(client, packet)) {
      log('debug', { clientId: client.id }, 'last will of a taken-over connection not published');
      return callback(new Error('taken over'));
    }
    if (!principal || !mayPublish(principal, packet.topic)) {
      callback(new Error(`publish to ${packet.topic} not allowed`));
      return;
    }
    // The same packet goes on to the retained store: cleared here, it is delivered but not kept.
    if (packet.retain && !mayRetain(principal, packet.topic)) packet.retain = false;
    callback(null);
  },
  authorizeSubscribe(client, subscription, callback) {
    const principal = principals.get(client);
    if (principal && maySubscribe(principal, subscription.topic)) return callback(null, subscription);
    log('warn', { clientId: client.id, topic: subscription.topic }, 'mqtt subscribe refused');
    // A null subscription answers the client with a failure code instead of closing it.
    callback(null, null);
  },
});
aedes.on('client', (client) => {
  if (takingOver.get(client.id) === client) takingOver.delete(client.id);
});
/** The connection registered under a client id now (aedes keeps them in `clients`, not in its types). */
function connectedClient(clientId: string): Client | undefined {
  return (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[clientId];
}
/** A closing connection's will, published while another connection of the same client id takes over. */
function isTakenOverWill(client: Client, packet: unknown): boolean {
  const closing = client as Client & { closed?: boolean; will?: unknown };
  if (!closing.closed || packet !== closing.will) return false;
  const successor = takingOver.get(client.id);
  return successor !== undefined && successor !== client;
}
aedes.on('clientError', (client, error) =>
  log('debug', { clientId: client.id, err: error.message }, 'mqtt client error'),
);

const guards = new WeakMap<Socket, PacketSizeGuard>();
function connected(socket: Socket): void {
  socket.setNoDelay(true);
  aedes.handle(socket);
  // aedes reads with read() on 'readable'; each read also emits 'data', which this sees before the parser.
  const guard = new PacketSizeGuard(MAX_MQTT_PACKET_BYTES);
  guards.set(socket, guard);
  socket.on('data', (chunk: Buffer) => {
    if (guard.accept(chunk)) return;
    log(
      'warn',
      { remote: socket.remoteAddress },
      `mqtt packet over ${MAX_MQTT_PACKET_BYTES} bytes: connection closed`,
    );
    socket.destroy();
  });
}

/** A plain-text client on the MQTTS port is told nothing (MQTT has no word for it): it is logged, at most this often. */
const PLAIN_TEXT_LOG_MS = 10_000;
let plainTextLoggedAt = 0;

/** The TLS server behind the port (MQTTS), whose certificate a renewal replaces. */
let secureServer: ReturnType<typeof createTlsServer> | undefined;

/** The listening server, and how to close it with every connection it holds. */
function listener(): { server: Server; close: () => Promise<void> } {
  if (data.tls) {
    const secure = createTlsServer({ cert: data.tls.cert, key: data.tls.key }, connected);
    secureServer = secure;
    secure.on('tlsClientError', (error, socket) =>
      log('debug', { remote: socket.remoteAddress, err: error.message }, 'mqtts handshake failed'),
    );
    const port = new TlsPort(secure, (socket) => {
      if (Date.now() - plainTextLoggedAt > PLAIN_TEXT_LOG_MS) {
        plainTextLoggedAt = Date.now();
        log(
          'warn',
          { remote: socket.remoteAddress },
          'refused a plain-text MQTT client: this port speaks MQTTS (TLS)',
        );
      }
      socket.destroy();
    });
    return { server: port.server, close: () => port.close() };
  }
  const sockets = new Set<Socket>();
  const server = createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    connected(socket);
  });
  const close = () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    return closed;
  };
  return { server, close };
}
const { server, close: closeServer } = listener();

async function close(): Promise<void> {
  await new Promise<void>((resolve) => aedes.close(() => resolve()));
  // aedes closed its clients; what is left are sockets that never sent CONNECT (or finished a handshake).
  await closeServer();
  // Ends this thread only; the main thread waits for the worker's exit.
  process.exit(0);
}

port.on('message', (message: ToBrokerThread) => {
  switch (message.type) {
    case 'authenticated': {
      const answer = logins.get(message.id);
      logins.delete(message.id);
      answer?.(message.principal);
      break;
    }
    case 'disconnect':
      disconnect(message.clientIds, message.clearRetained);
      break;
    case 'tls':
      secureServer?.setSecureContext({ cert: message.cert, key: message.key });
      break;
    case 'close':
      void close();
      break;
  }
});

/** Client ids of removed nodes: nothing of theirs is published any more, their last wills included. */
const cutOff = new Set<string>();

/** Closes these clients' connections (their logins fail from now on, so they stay out) and clears retained topics. */
function disconnect(clientIds: string[], clearRetained: string[]): void {
  const clients = (aedes as unknown as { clients: Record<string, Client | undefined> }).clients;
  for (const id of clientIds) {
    cutOff.add(id);
    clients[id]?.close();
  }
  for (const topic of clearRetained)
    aedes.publish(
      { cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false },
      () => {},
    );
  log('info', { clientIds }, 'disconnected the clients of a removed node');
}

/** Connections the kernel may hold for accept(); it caps this at net.core.somaxconn. */
const ACCEPT_QUEUE = 8192;

// A listen error (the port taken) throws out of this module: the worker fails and the main thread sees it.
await new Promise<void>((resolve, reject) => {
  server.once('error', reject);
  // A fleet reconnecting at once (after a restart of the cluster manager or of the network) opens thousands of
  // connections within seconds: Node's default accept queue (511) overflows and the kernel drops them.
  server.listen({ port: data.port, host: data.host, backlog: ACCEPT_QUEUE }, () => {
    server.off('error', reject);
    resolve();
  });
});
const address = server.address();
send({ type: 'listening', port: typeof address === 'object' && address ? address.port : data.port });
