import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { HostAllowancesSchema } from './host-allowances.js';
import { ARCHES, TECHNOLOGIES } from './job.js';
import { MqttLoginSchema } from './mqtt-login.js';
import { RendezvousSchema } from './net.js';

/** A label's key, on a node (its own or an operator's) or in a job's constraints. */
export const LabelKeySchema = z.string().min(1).max(253);

/**
 * `PATCH /api/nodes/:id/labels`: labels an operator sets (a value) or removes (null) on a node, over those it
 * announces and over the operator's earlier changes.
 */
export const NodeLabelPatchSchema = z
  .record(LabelKeySchema, z.string().max(253).nullable())
  .refine((patch) => Object.keys(patch).length > 0, 'at least one label')
  .refine((patch) => Object.keys(patch).length <= 100, 'at most 100 labels at once');

export const GpuSchema = z.object({
  index: z.number().int().min(0),
  vendor: z.string().max(200),
  model: z.string().max(200),
  memoryTotalMB: z.number().min(0).nullable(),
  memoryUsedMB: z.number().min(0).nullable().optional(),
  utilizationPercent: z.number().min(0).max(100).nullable().optional(),
  temperatureC: z.number().nullable().optional(),
  /** In telemetry: nvidia-smi did not answer this round; these are the last numbers it gave. */
  stale: z.boolean().optional(),
});
export type Gpu = z.infer<typeof GpuSchema>;

/** One entry of the `--sensors` YAML file. */
export const SensorConfigSchema = z.strictObject({
  id: z.string().min(1).max(253),
  type: z.string().min(1).max(253),
  device: z.string().startsWith('/dev/').optional(),
  file: z.string().startsWith('/').optional(),
  scale: z.number().default(1),
  unit: z.string().max(32).optional(),
});
export type SensorConfig = z.infer<typeof SensorConfigSchema>;
export const SensorsFileSchema = z.array(SensorConfigSchema).max(1000);

/** A sensor as a node announces it. */
export const SensorSchema = z.object({
  id: z.string().min(1).max(253),
  type: z.string().min(1).max(253),
  device: z.string().max(4096).optional(),
  unit: z.string().max(32).optional(),
  available: z.boolean(),
});
export type Sensor = z.infer<typeof SensorSchema>;

/** What a node engine sends with `register` on the `/init` namespace. */
export const NodeInfoSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/, 'a host name'),
  arch: z.enum(ARCHES),
  os: z.string().min(1).max(200),
  cpus: z.number().positive().max(100_000),
  memoryBytes: z.number().int().positive(),
  gpus: z.array(GpuSchema).max(64).default([]),
  sensors: z.array(SensorSchema).max(1000).default([]),
  runtimes: z.array(z.enum(TECHNOLOGIES)).max(TECHNOLOGIES.length),
  labels: z.record(LabelKeySchema, z.string().max(253)).default({}),
  version: z.string().max(64),
  overlay: z.boolean().default(false),
  /** What the node lets jobs use of its host; absent from node engines older than issue 11 (then: unknown). */
  allowed: HostAllowancesSchema.optional(),
});
export type NodeInfo = z.infer<typeof NodeInfoSchema>;
export type NodeInfoInput = z.input<typeof NodeInfoSchema>;

export const NodeRegistrationAuthSchema = z.union([
  /**
   * A join. `nodeSecret`: the secret the node made for itself and keeps (K3s' node password): the cluster
   * manager stores its hash, and only it lets a node that lost the answer register under its name again.
   */
  z.strictObject({ token: z.string().min(1).max(512), nodeSecret: z.string().min(32).max(512).optional() }),
  z.strictObject({ nodeId: z.string().min(1).max(128), nodeSecret: z.string().min(1).max(512) }),
]);
export type NodeRegistrationAuth = z.infer<typeof NodeRegistrationAuthSchema>;

/** The secret a node makes for itself before its first join: 256 random bits. */
export function newNodeSecret(): string {
  return randomBytes(32).toString('base64url');
}

export const ApiErrorBodySchema = z.object({
  code: z.string(),
  message: z.string(),
  details: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
});
export type ApiErrorBody = z.infer<typeof ApiErrorBodySchema>;

export const RegisterAckSchema = z.union([
  z.object({
    nodeId: z.string(),
    nodeSecret: z.string(),
    mqtt: MqttLoginSchema,
    /** The net manager's own login, where it is not the node's (an external broker with per-node logins). */
    netMqtt: MqttLoginSchema.optional(),
    telemetryIntervalMs: z.number().int().positive(),
    subnet: z.string().optional(),
    /** Whether the overlay is encrypted (handed on to the net manager); absent from older cluster managers. */
    overlayEncryption: z.boolean().optional(),
    /** The cluster manager's UDP rendezvous port (handed on to the net manager). */
    rendezvous: RendezvousSchema.optional(),
  }),
  z.object({ error: ApiErrorBodySchema }),
]);
export type RegisterAck = z.infer<typeof RegisterAckSchema>;

export const NODE_STATUSES = ['online', 'offline'] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];

/** A node as the API returns it. */
export const NodeViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  status: z.enum(NODE_STATUSES),
  address: z.string().nullable(),
  arch: z.enum(ARCHES),
  os: z.string(),
  runtimes: z.array(z.enum(TECHNOLOGIES)),
  /** Its labels: those it announces, with an operator's changes over them (`operatorLabels`). */
  labels: z.record(z.string(), z.string()),
  /** What an operator set (a value) or removed (null) at run time; they outlast the node's registrations. */
  operatorLabels: z.record(z.string(), z.string().nullable()),
  /** An operator cordoned it: no new instance is placed or moved there. */
  cordoned: z.boolean(),
  /** An operator is draining it: its instances move away, make-before-break (it is cordoned too). */
  draining: z.boolean(),
  capacity: z.object({ cpus: z.number(), memoryBytes: z.number(), gpus: z.array(GpuSchema) }),
  allocated: z.object({ cpus: z.number(), memoryBytes: z.number(), gpus: z.number() }),
  usage: z.object({
    cpuPercent: z.number().nullable(),
    memoryPercent: z.number().nullable(),
    diskPercent: z.number().nullable(),
  }),
  sensors: z.array(SensorSchema),
  overlay: z.boolean(),
  subnet: z.string().optional(),
  /** The overlay endpoint its net manager announced, once it did. */
  overlayEndpoint: z
    .object({ publicIp: z.string(), udpPort: z.number().int(), publicKey: z.string().optional() })
    .optional(),
  version: z.string(),
  registeredAt: z.number(),
  lastSeen: z.number().nullable(),
});
export type NodeView = z.infer<typeof NodeViewSchema>;
