import { z } from 'zod';
import { isIpv4 } from './ipv4.js';
import { MqttLoginSchema } from './mqtt-login.js';

/**
 * What crosses the net manager's boundaries: its MQTT topics (`nodes/<id>/net/...`) to and from the cluster
 * manager, and its local API (HTTP on a unix socket) that the node engine calls.
 */

export const Ipv4Schema = z.string().refine(isIpv4, 'an IPv4 address');
/** An X25519 public key: 32 bytes in base64 (44 characters, one `=`). */
const OVERLAY_KEY = /^[A-Za-z0-9+/]{43}=$/;
const OverlayKeySchema = z.string().regex(OVERLAY_KEY, 'a 32-byte key in base64');
const PortSchema = z.number().int().min(1).max(65535);

/** An address and UDP port a worker's overlay may be reached at. */
export const OverlayEndpointSchema = z.object({ ip: Ipv4Schema, port: PortSchema });
export type OverlayEndpoint = z.infer<typeof OverlayEndpointSchema>;
/** A worker's other candidates (its local addresses, the address and port its NAT maps it to), peers try all. */
const CandidatesSchema = z.array(OverlayEndpointSchema).max(8);

/** Where a net manager asks what its address and port look like from outside (the cluster manager's UDP port). */
export const RendezvousSchema = z.object({ host: z.string().min(1).max(253), port: PortSchema });
export type Rendezvous = z.infer<typeof RendezvousSchema>;

/** The overlay addresses an instance is deployed with; carried by `deploy`, `move` and `replicate`. */
export const InstanceNetworkSchema = z.object({
  instanceIp: Ipv4Schema,
  serviceIp: Ipv4Schema,
});
export type InstanceNetwork = z.infer<typeof InstanceNetworkSchema>;

// --- MQTT: net manager <-> cluster manager -------------------------------------------------------------

/** `nodes/<id>/net/announce`, net manager -> cluster manager, QoS 1, on every MQTT connect. */
export const NetAnnounceSchema = z.object({
  publicIp: Ipv4Schema,
  udpPort: PortSchema,
  subnet: z.string().max(32).optional(),
  /** The net manager's X25519 public key (base64): peers handshake with it when the overlay is encrypted. */
  publicKey: OverlayKeySchema.optional(),
  candidates: CandidatesSchema.optional(),
  /** Where the rendezvous port saw this net manager's probes come from: where its relay sends what is for it. */
  reflexive: OverlayEndpointSchema.optional(),
  ts: z.number(),
});
export type NetAnnounce = z.infer<typeof NetAnnounceSchema>;

/**
 * `nodes/<id>/net/query`, net manager -> cluster manager, QoS 1: which job owns this overlay address (`ip`), or
 * which node has this overlay key (`key`: a handshake came from it)?
 */
export const NetQuerySchema = z.union([
  z.object({ ip: Ipv4Schema, ts: z.number() }),
  /** `punch`: a handshake to that node is under way: tell it to reach out too (opening its NAT). */
  z.object({ key: OverlayKeySchema, punch: z.literal(true).optional(), ts: z.number() }),
]);
export type NetQuery = z.infer<typeof NetQuerySchema>;

/** Where an instance runs now: its worker's overlay endpoint and its namespace IP there. */
export const InstanceRouteSchema = z.object({
  nodeId: z.string().min(1).max(128),
  namespaceIp: Ipv4Schema,
  publicIp: Ipv4Schema,
  udpPort: PortSchema,
  /** The worker's overlay key, when its net manager announced one (the encrypted overlay needs it). */
  publicKey: OverlayKeySchema.optional(),
  candidates: CandidatesSchema.optional(),
});
export type InstanceRoute = z.infer<typeof InstanceRouteSchema>;

/** One instance of a job in a route table; `route` is absent while it does not run (or is not attached). */
export const RouteTableInstanceSchema = z.object({
  number: z.number().int().min(0),
  instanceIp: Ipv4Schema,
  route: InstanceRouteSchema.optional(),
});
export type RouteTableInstance = z.infer<typeof RouteTableInstanceSchema>;

/**
 * `nodes/<id>/net/table`, cluster manager -> net manager, QoS 1: the answer to a query (`query` set) or a push
 * after a change of a job the node asked about. `job`: the job's whole table; `missing`: no job owns the
 * queried address; `removed`: the job is gone, forget its addresses.
 */
export const NetTableSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('job'),
    jobId: z.string().min(1).max(128),
    jobName: z.string().max(63),
    serviceIp: Ipv4Schema,
    instances: z.array(RouteTableInstanceSchema).max(1000),
    query: Ipv4Schema.optional(),
    ts: z.number(),
  }),
  z.object({ kind: z.literal('missing'), query: Ipv4Schema, ts: z.number() }),
  z.object({ kind: z.literal('removed'), jobId: z.string().min(1).max(128), ts: z.number() }),
  /** The answer to a key query: the node with that key, or no `node` when none has it. */
  z.object({
    kind: z.literal('peer'),
    publicKey: OverlayKeySchema,
    node: z
      .object({
        nodeId: z.string().min(1).max(128),
        publicIp: Ipv4Schema,
        udpPort: PortSchema,
        candidates: CandidatesSchema.optional(),
      })
      .optional(),
    /** That node is making a handshake with this one: reach out to it too (hole punching). */
    punch: z.literal(true).optional(),
    ts: z.number(),
  }),
]);
export type NetTable = z.infer<typeof NetTableSchema>;
export type JobRouteTable = Extract<NetTable, { kind: 'job' }>;

// --- Local API: node engine -> net manager (HTTP over <data-dir>/net-manager.sock) ---------------------

/** `POST /v1/node`: who this node is, how it reaches the broker, and its worker subnet. */
export const NodeHandoverSchema = z.object({
  nodeId: z.string().min(1).max(128),
  mqtt: MqttLoginSchema,
  subnet: z.string().max(32).optional(),
  /**
   * Whether the cluster's overlay is encrypted (the cluster manager's `--overlay-encryption`). Absent: a cluster
   * manager from before encryption, which hands out no keys: unencrypted.
   */
  encryption: z.boolean().optional(),
  /** The cluster manager's UDP port that tells a net manager its address as seen from outside. */
  rendezvous: RendezvousSchema.optional(),
});
export type NodeHandover = z.infer<typeof NodeHandoverSchema>;

/** `POST /v1/attach`: join a running container (its network namespace, by pid) to the overlay. */
export const AttachRequestSchema = z.object({
  containerId: z.string().min(1).max(128),
  pid: z.number().int().positive(),
  jobId: z.string().min(1).max(128),
  jobName: z.string().max(63),
  instance: z.number().int().min(0),
  instanceIp: Ipv4Schema,
  serviceIp: Ipv4Schema.optional(),
});
export type AttachRequest = z.infer<typeof AttachRequestSchema>;

export const AttachResponseSchema = z.object({ namespaceIp: Ipv4Schema, interface: z.string() });
export type AttachResponse = z.infer<typeof AttachResponseSchema>;

/** `POST /v1/detach`: the container is going; release its namespace IP. Detaching twice is fine. */
export const DetachRequestSchema = z.object({ containerId: z.string().min(1).max(128) });
export type DetachRequest = z.infer<typeof DetachRequestSchema>;

/**
 * `GET /v1/status` (also the answer to `POST /v1/node`). `bootId` changes with every start: attachments made
 * before it must be made again. Unknown fields are dropped and `offload` may be missing, so the node engine still
 * reads a net manager of another version.
 */
export const NetManagerStatusSchema = z.object({
  bootId: z.string().min(1),
  nodeId: z.string().nullable(),
  subnet: z.string().nullable(),
  publicIp: z.string().nullable(),
  udpPort: z.number().int(),
  tun: z.string(),
  /** TSO/GSO/GRO offloads in use (off with --no-offload, or where the kernel refused them). */
  offload: z.boolean().default(false),
  /** Whether established flows are forwarded in the addon (off with --no-fast-path); see `fastPath*` counters. */
  fastPath: z.boolean().default(false),
  mqttConnected: z.boolean(),
  /** Whether overlay traffic is encrypted and authenticated (see `peers`). */
  encryption: z.boolean().default(false),
  /** The TUN's MTU. */
  mtu: z.number().int().optional(),
  /** Encrypted overlay: the workers this one has sessions with, or is making one with. */
  peers: z
    .array(
      z.object({
        nodeId: z.string(),
        publicKey: z.string(),
        endpoint: z.string(),
        session: z.enum(['established', 'handshaking', 'none']),
        cipher: z.enum(['chacha20-poly1305', 'aes-256-gcm']).nullable().optional(),
        via: z.enum(['direct', 'relay']).optional(),
        lastHandshakeMsAgo: z.number().nullable(),
        rxBytes: z.number(),
        txBytes: z.number(),
        roams: z.number(),
      }),
    )
    .optional(),
  /** What this net manager announces besides `publicIp`: local addresses, the reflexive one. */
  candidates: z.array(OverlayEndpointSchema).optional(),
  attachments: z.number().int(),
  counters: z.record(z.string(), z.number()),
});
export type NetManagerStatus = z.infer<typeof NetManagerStatusSchema>;
