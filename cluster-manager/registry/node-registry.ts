import { randomUUID } from 'node:crypto';
import type { Server, Socket } from 'socket.io';
import {
  fieldProblems,
  type Logger,
  type MqttLogin,
  type NodeInfo,
  NodeInfoSchema,
  NodeRegistrationAuthSchema,
  parseJoinToken,
  type RegisterAck,
} from '../../shared/index.js';
import { hashSecret, newSecret, sameSecret } from '../secrets.js';
import type { NodeRecord, Store } from '../store/index.js';

export interface RegistryOptions {
  joinToken: string;
  telemetryIntervalMs: number;
  /** The MQTT login and URL handed to a node; `host` is how the node reached us. */
  mqttFor(node: { id: string; secret: string }, host: string | undefined): MqttLogin;
  /** Call inside a transaction: the node's worker subnet, kept once given; null without a net manager. */
  subnetFor(nodeId: string, overlay: boolean): string | null;
  onRegistered(node: NodeRecord, firstTime: boolean): void;
}

type Identity = { kind: 'token' } | { kind: 'node'; nodeId: string; nodeSecret: string };

/**
 * The `/init` namespace: nodes connect with the join token (first time) or their id and secret (after), then
 * emit `register` with their node info and get their identity and MQTT login back.
 */
export class NodeRegistry {
  constructor(
    private readonly store: Store,
    private readonly options: RegistryOptions,
    private readonly logger: Logger,
  ) {}

  attach(io: Server): void {
    const namespace = io.of('/init');
    namespace.use((socket, next) => {
      const identity = this.authenticate(socket.handshake.auth);
      if (!identity) {
        this.logger.warn({ address: socket.handshake.address }, 'node registration refused: unauthorized');
        next(new Error('unauthorized'));
        return;
      }
      socket.data.identity = identity;
      next();
    });
    namespace.on('connection', (socket) => {
      socket.on('register', (info: unknown, ack: unknown) => {
        if (typeof ack !== 'function') return;
        const failed = (error: Error) => {
          this.logger.error({ err: error.stack }, 'registration failed');
          ack({ error: { code: 'internal', message: 'registration failed; try again' } });
        };
        try {
          const answer = this.register(socket, info);
          // The node keeps its identity for good: it must be on disk before the node hears it.
          this.store.durable().then(() => ack(answer), failed);
        } catch (error) {
          failed(error as Error);
        }
      });
    });
  }

  private authenticate(auth: unknown): Identity | null {
    const parsed = NodeRegistrationAuthSchema.safeParse(auth);
    if (!parsed.success) return null;
    if ('token' in parsed.data) {
      // The full token (E10<CA fingerprint>::<secret>) or the bare secret: the fingerprint is for the node.
      const { secret } = parseJoinToken(parsed.data.token);
      return sameSecret(secret, this.options.joinToken) ? { kind: 'token' } : null;
    }
    const node = this.store.nodes.get(parsed.data.nodeId);
    if (!node || !sameSecret(hashSecret(parsed.data.nodeSecret), node.secretHash)) return null;
    return { kind: 'node', nodeId: node.id, nodeSecret: parsed.data.nodeSecret };
  }

  private register(socket: Socket, raw: unknown): RegisterAck {
    const parsed = NodeInfoSchema.safeParse(raw);
    if (!parsed.success) {
      return {
        error: { code: 'invalid_input', message: 'invalid node info', details: fieldProblems(parsed.error) },
      };
    }
    const info: NodeInfo = parsed.data;
    const identity = socket.data.identity as Identity;
    const now = Date.now();
    const sameName = this.store.nodes.findByName(info.name);
    // One connection registers one node: a join token in hand does not make a connection a factory of nodes.
    // (A connection with a node's own identity can only ever register that node.)
    const bound = socket.data.nodeId as string | undefined;
    if (identity.kind === 'token' && bound !== undefined && sameName?.id !== bound) {
      this.logger.warn(
        { address: socket.handshake.address, bound, name: info.name },
        'second node on one connection refused',
      );
      return {
        error: {
          code: 'conflict',
          message: `this connection registered node ${bound}; one connection registers one node`,
        },
      };
    }
    let id: string;
    let secret: string;
    if (identity.kind === 'node') {
      id = identity.nodeId;
      secret = identity.nodeSecret;
      if (sameName && sameName.id !== id) {
        return {
          error: { code: 'conflict', message: `node name "${info.name}" is taken by node ${sameName.id}` },
        };
      }
    } else {
      if (sameName && sameName.status === 'online' && sameName.id !== bound) {
        return {
          error: {
            code: 'conflict',
            message: `node name "${info.name}" is taken by online node ${sameName.id}`,
          },
        };
      }
      // A node that lost its identity (a reinstalled machine) and comes back under its name takes the old id.
      id = sameName?.id ?? randomUUID();
      secret = newSecret();
    }
    const previous = this.store.nodes.get(id);
    const record: NodeRecord = {
      id,
      name: info.name,
      secretHash: hashSecret(secret),
      info,
      address: normalizeAddress(socket.handshake.address),
      status: previous?.status ?? 'offline',
      registeredAt: previous?.registeredAt ?? now,
      lastSeen: previous?.lastSeen ?? null,
      telemetry: previous?.telemetry ?? null,
      subnet: previous?.subnet ?? null,
      publicIp: previous?.publicIp ?? null,
      udpPort: previous?.udpPort ?? null,
    };
    this.store.transaction(() => {
      this.store.nodes.upsert(record);
      record.subnet = this.options.subnetFor(id, info.overlay);
    });
    this.store.events.record(
      'node.registered',
      `node ${info.name} ${previous ? 'registered again' : 'registered'} (${info.arch}, ${info.cpus} cpus)`,
      { nodeId: id },
    );
    this.logger.info({ nodeId: id, name: info.name, firstTime: !previous }, 'node registered');
    socket.data.nodeId = id;
    this.options.onRegistered(record, !previous);
    const hostHeader = socket.handshake.headers.host;
    return {
      nodeId: id,
      nodeSecret: secret,
      mqtt: this.options.mqttFor({ id, secret }, hostHeader),
      telemetryIntervalMs: this.options.telemetryIntervalMs,
      ...(record.subnet ? { subnet: record.subnet } : {}),
    };
  }
}

function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
