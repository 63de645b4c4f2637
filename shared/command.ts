import { z } from 'zod';
import { HealthStateSchema, InstanceStatusSchema, JobDefinitionSchema } from './job.js';
import { InstanceNetworkSchema, Ipv4Schema } from './net.js';

export const COMMAND_KINDS = ['deploy', 'delete', 'move', 'replicate'] as const;
export type CommandKind = (typeof COMMAND_KINDS)[number];

/** `nodes/<id>/control`: the seed message format `{command, job, cluster, worker}` extended with ids. */
export const CommandSchema = z.object({
  id: z.string().min(1).max(128),
  command: z.enum(COMMAND_KINDS),
  job: JobDefinitionSchema,
  /** The instance number; -1 on `delete` means every instance of the job on this node. */
  instance: z.number().int().min(-1),
  generation: z.number().int().min(0),
  cluster: z.array(z.string()),
  /** `move`: `[from, to]`; otherwise the node ids the command is for. */
  worker: z.array(z.string()),
  issuedAt: z.number(),
  /** The instance's overlay addresses (`deploy`, `move`, `replicate`), when the cluster has an overlay. */
  network: InstanceNetworkSchema.optional(),
});
export type Command = z.infer<typeof CommandSchema>;

/** A node's words end up in SQLite, events and the API: kept to a bounded length, clipped rather than refused. */
const clipped = (max: number) =>
  z.string().transform((text) => (text.length > max ? `${text.slice(0, max - 1)}…` : text));

/** Why a node refused a command; code and message are clipped to 64 and 4,096 characters. */
export const CommandErrorSchema = z.object({ code: clipped(64), message: clipped(4096) });

/** `nodes/<id>/control/ack`: sent once the command is durably in the node's desired state. */
export const CommandAckSchema = z.object({
  id: z.string().min(1).max(128),
  ok: z.boolean(),
  error: CommandErrorSchema.optional(),
});
export type CommandAck = z.infer<typeof CommandAckSchema>;

/** `nodes/<id>/job`: an instance's status, on every change, QoS 1. */
export const InstanceStatusReportSchema = z.object({
  job: z.string().max(128),
  instance: z.number().int().min(0),
  generation: z.number().int().min(0),
  status: InstanceStatusSchema,
  detail: z.string().max(4096).default(''),
  containerId: z.string().max(128).nullable().default(null),
  exitCode: z.number().int().optional(),
  restarts: z.number().int().min(0).default(0),
  startedAt: z.number().optional(),
  /** Ends up in other workers' route tables: it must be an address. */
  namespaceIp: Ipv4Schema.optional(),
  /**
   * Its deploy or start failed and is tried again after a back-off (the detail says why): the node keeps
   * trying, and a move to this node is abandoned rather than waited for.
   */
  backOff: z.object({ failures: z.number().int().min(1), retryInMs: z.number().min(0) }).optional(),
  /** Its image is being pulled: how far (the detail says it in words: `pulling 43% of 120 MB`). */
  pull: z.object({ percent: z.number().min(0).max(100), totalBytes: z.number().min(0) }).optional(),
  /** A running instance of a job with a health check: the check's verdict (the detail says why it fails). */
  health: HealthStateSchema.optional(),
  ts: z.number(),
});
export type InstanceStatusReport = z.infer<typeof InstanceStatusReportSchema>;
export type InstanceStatusReportInput = z.input<typeof InstanceStatusReportSchema>;
