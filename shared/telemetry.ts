import { z } from 'zod';
import { HealthStateSchema, InstanceStatusSchema } from './job.js';
import { GpuSchema } from './node.js';

/**
 * Everything here comes from nodes and is kept (in memory, in SQLite, in API answers): strings and lists are
 * bounded, so that a node cannot make the cluster manager hold more than a few KiB per message of it.
 */
export const SensorReadingSchema = z.object({
  id: z.string().max(253),
  type: z.string().max(253),
  value: z.union([z.number(), z.string().max(1024), z.boolean()]).nullable(),
  unit: z.string().max(32).optional(),
  /** When it was read: a stale reading is the last one that came in time (this round's did not). */
  ts: z.number(),
  stale: z.boolean().optional(),
});
export type SensorReading = z.infer<typeof SensorReadingSchema>;

/** What a node runs, as it reports it in every telemetry message. */
export const InstanceSummarySchema = z.object({
  job: z.string().max(128),
  instance: z.number().int().min(0),
  generation: z.number().int().min(0),
  status: InstanceStatusSchema,
  health: HealthStateSchema.optional(),
});
export type InstanceSummary = z.infer<typeof InstanceSummarySchema>;

/** `nodes/<id>/information`, every telemetry interval, QoS 0. */
export const NodeTelemetrySchema = z.object({
  nodeId: z.string().max(128),
  ts: z.number(),
  cpu: z.object({ percent: z.number().min(0), cores: z.number().int().min(0), load1: z.number().min(0) }),
  memory: z.object({
    totalBytes: z.number().min(0),
    usedBytes: z.number().min(0),
    percent: z.number().min(0),
  }),
  disk: z.object({ totalBytes: z.number().min(0), usedBytes: z.number().min(0), percent: z.number().min(0) }),
  gpus: z.array(GpuSchema).max(64),
  sensors: z.array(SensorReadingSchema).max(1000),
  instances: z.array(InstanceSummarySchema).max(10_000),
});
export type NodeTelemetry = z.infer<typeof NodeTelemetrySchema>;

/** `nodes/<id>/jobs/resources`, every telemetry interval, QoS 0. */
export const JobResourcesSchema = z.object({
  ts: z.number(),
  instances: z
    .array(
      z.object({
        job: z.string().max(128),
        instance: z.number().int().min(0),
        cpuPercent: z.number().min(0),
        memoryBytes: z.number().min(0),
      }),
    )
    .max(10_000),
});
export type JobResources = z.infer<typeof JobResourcesSchema>;
