import { randomUUID } from 'node:crypto';
import type { Server, Socket } from 'socket.io';
import {
  fieldProblems,
  type Logger,
  type MqttLogin,
  type NodeInfo,
  NodeInfoSchema,
  NodeRegistrationAuthSchema,
  type RegisterAck,
  type Rendezvous,
} from '../../shared/index.js';
import { hashSecret, newSecret, sameSecret } from '../secrets.js';
import type { NodeRecord, Store } from '../store/index.js';
import { RateLimiter } from './rate-limit.js';

/** An address may register this many seconds' worth of its rate at once (a site's fleet after a power cut). */
const REGISTRATION_BURST_SECONDS = 10;

export interface RegistryOptions {
  /** Registration attempts (Socket.IO `/init` connections) per second per source address; 0: no limit. */
  registrationRatePerS: number;
  /** Whether a presented join token (its `E10…::` form or the bare secret) is a valid token of role `join`. */
  isJoinToken(presented: string): boolean;
  telemetryIntervalMs: number;
  /** Whether the overlay is encrypted: told to every node that gets a subnet. */
  overlayEncryption: boolean;
  /** The rendezvous port as the node reaches it (the host it reached the cluster manager at). */
  rendezvousFor?: (host: string | undefined) => Rendezvous;
  /** The MQTT login and URL handed to a node; `host` is how the node reached us. */
  mqttFor(node: { id: string; secret: string }, host: string | undefined): MqttLogin;
  /** The net manager's login, when it is not the node's own (an external broker with per-node logins). */
  netMqttFor?(node: { id: string; secret: string }, login: MqttLogin): MqttLogin;
  /**
   * Makes sure the node's broker login exists before it hears the answer (an external broker's dynamic
   * security); `secretChanged`: its secret is new (a new node, or one that joined again with another secret).
   */
  provision?(node: { id: string; secret: string; secretChanged: boolean }): Promise<void>;
  /** Call inside a transaction: the node's worker subnet, kept once given; null without a net manager. */
  subnetFor(nodeId: string, overlay: boolean): string | null;
  onRegistered(node: NodeRecord, firstTime: boolean): void;
}

type Identity =
  | { kind: 'token'; proposedSecret?: string }
  | { kind: 'node'; nodeId: string; nodeSecret: string };

/**
 * The `/init` namespace: nodes connect with the join token (first time) or their id and secret (after), then
 * emit `register` with their node info and get their identity and MQTT login back.
 */
export class NodeRegistry {
  constructor(
    private readonly store: Store,
    private readonly options: RegistryOptions,
    private readonly logger: Logger,
  ) {
    const rate = options.registrationRatePerS;
    this.limiter = new RateLimiter(rate, rate * REGISTRATION_BURST_SECONDS);
  }

  private namespace?: ReturnType<Server['of']>;
  private readonly limiter: RateLimiter;
  private refusedForRate = 0;

  /** Closes the Socket.IO connections of a node (it was removed). */
  disconnect(nodeId: string): void {
    for (const socket of this.namespace?.sockets.values() ?? [])
      if (socket.data.nodeId === nodeId) socket.disconnect(true);
  }

  attach(io: Server): void {
    const namespace = io.of('/init');
    this.namespace = namespace;
    namespace.use((socket, next) => {
      // Before anything else: a flood of registrations from one address (a leaked join token making nodes,
      // a guesser) costs at most the address's rate.
      if (!this.limiter.take(normalizeAddress(socket.handshake.address))) {
        this.refusedForRate++;
        if (this.refusedForRate % 100 === 1)
          this.logger.warn(
            { address: socket.handshake.address, refused: this.refusedForRate },
            'node registration refused: too many from this address (--registration-rate)',
          );
        next(new Error('rate limited'));
        return;
      }
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
          const { answer, provisioned } = this.register(socket, info);
          // The node keeps its identity for good: it must be on disk before the node hears it, and its broker
          // login must exist before it tries it.
          Promise.all([this.store.durable(), provisioned]).then(
            () => ack(answer),
            (error: Error) => {
              this.logger.error({ err: error.message }, 'cannot provision the node on the broker');
              ack({
                error: {
                  code: 'unavailable',
                  message: `the broker cannot take the node's login yet (${error.message}); try again`,
                },
              });
            },
          );
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
      if (!this.options.isJoinToken(parsed.data.token)) return null;
      return { kind: 'token', proposedSecret: parsed.data.nodeSecret };
    }
    const node = this.store.nodes.get(parsed.data.nodeId);
    if (!node || !sameSecret(hashSecret(parsed.data.nodeSecret), node.secretHash)) return null;
    return { kind: 'node', nodeId: node.id, nodeSecret: parsed.data.nodeSecret };
  }

  /** The answer, and the broker login being made for it (when the broker needs one made). */
  private register(socket: Socket, raw: unknown): { answer: RegisterAck; provisioned?: Promise<void> } {
    const { answer, secretChanged } = this.answer(socket, raw);
    if (!('nodeId' in answer) || !this.options.provision) return { answer };
    return {
      answer,
      provisioned: this.options.provision({ id: answer.nodeId, secret: answer.nodeSecret, secretChanged }),
    };
  }

  /** The registration's answer; `secretChanged`: the node's secret is not the one it had (or it is new). */
  private answer(socket: Socket, raw: unknown): { answer: RegisterAck; secretChanged: boolean } {
    const parsed = NodeInfoSchema.safeParse(raw);
    if (!parsed.success) {
      return refused({
        error: { code: 'invalid_input', message: 'invalid node info', details: fieldProblems(parsed.error) },
      });
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
      return refused({
        error: {
          code: 'conflict',
          message: `this connection registered node ${bound}; one connection registers one node`,
        },
      });
    }
    let id: string;
    let secret: string;
    if (identity.kind === 'node') {
      id = identity.nodeId;
      secret = identity.nodeSecret;
      if (sameName && sameName.id !== id) {
        return refused({
          error: { code: 'conflict', message: `node name "${info.name}" is taken by node ${sameName.id}` },
        });
      }
    } else {
      const proposed = identity.proposedSecret;
      if (sameName && sameName.id !== bound) {
        // A name is claimed again only with its node's secret: a node whose answer was lost retries with it.
        if (!proposed || !sameSecret(hashSecret(proposed), sameName.secretHash)) {
          this.logger.warn(
            { address: socket.handshake.address, name: info.name, nodeId: sameName.id },
            'registration under a taken name refused',
          );
          return refused({
            error: {
              code: 'conflict',
              message: `node name "${info.name}" belongs to node ${sameName.id}: only that node (with its secret) registers under it; to give the name to another machine, remove the node first (edgectl node remove ${info.name})`,
            },
          });
        }
      } else if (proposed && this.store.nodes.isRemovedSecret(hashSecret(proposed))) {
        this.logger.warn(
          { address: socket.handshake.address, name: info.name },
          'a removed node tried to join again',
        );
        return refused({
          error: {
            code: 'forbidden',
            message:
              'this node was removed by an operator: it joins again only as a new node (clear its data dir for a new identity)',
          },
        });
      }
      // The node that lost its answer gets its id back; a new name gets a new id.
      id = sameName?.id ?? randomUUID();
      secret = proposed ?? newSecret();
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
      overlayKey: previous?.overlayKey ?? null,
      overlayCandidates: previous?.overlayCandidates ?? [],
      cordoned: previous?.cordoned ?? false,
      draining: previous?.draining ?? false,
      operatorLabels: previous?.operatorLabels ?? {},
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
    const mqtt = this.options.mqttFor({ id, secret }, hostHeader);
    const netMqtt = this.options.netMqttFor?.({ id, secret }, mqtt);
    return {
      answer: {
        nodeId: id,
        nodeSecret: secret,
        mqtt,
        ...(netMqtt ? { netMqtt } : {}),
        telemetryIntervalMs: this.options.telemetryIntervalMs,
        ...(record.subnet
          ? {
              subnet: record.subnet,
              overlayEncryption: this.options.overlayEncryption,
              ...(this.options.rendezvousFor ? { rendezvous: this.options.rendezvousFor(hostHeader) } : {}),
            }
          : {}),
      },
      secretChanged: previous?.secretHash !== record.secretHash,
    };
  }
}

/** A registration refused: nothing was stored, nothing is to be provisioned. */
function refused(answer: Extract<RegisterAck, { error: unknown }>): {
  answer: RegisterAck;
  secretChanged: boolean;
} {
  return { answer, secretChanged: false };
}

function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
