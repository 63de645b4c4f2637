import { z } from 'zod';
import { InstanceStatusSchema } from './job.js';
import { GpuSchema } from './node.js';

export const SensorReadingSchema = z.object({
  id: z.string(),
  type: z.string(),
  value: z.union([z.number(), z.string(), z.boolean()]).nullable(),
  unit: z.string().optional(),
  ts: z.number(),
});
export type SensorReading = z.infer<typeof SensorReadingSchema>;

/** What a node runs, as it reports it in every telemetry message. */
export const InstanceSummarySchema = z.object({
  job: z.string(),
  instance: z.number().int().min(0),
  generation: z.number().int().min(0),
  status: InstanceStatusSchema,
});
export type InstanceSummary = z.infer<typeof InstanceSummarySchema>;

/** `nodes/<id>/information`, every telemetry interval, QoS 0. */
export const NodeTelemetrySchema = z.object({
  nodeId: z.string(),
  ts: z.number(),
  cpu: z.object({ percent: z.number().min(0), cores: z.number().int().min(0), load1: z.number().min(0) }),
  memory: z.object({
    totalBytes: z.number().min(0),
    usedBytes: z.number().min(0),
    percent: z.number().min(0),
  }),
  disk: z.object({ totalBytes: z.number().min(0), usedBytes: z.number().min(0), percent: z.number().min(0) }),
  gpus: z.array(GpuSchema),
  sensors: z.array(SensorReadingSchema),
  instances: z.array(InstanceSummarySchema),
});
export type NodeTelemetry = z.infer<typeof NodeTelemetrySchema>;

/** `nodes/<id>/jobs/resources`, every telemetry interval, QoS 0. */
export const JobResourcesSchema = z.object({
  ts: z.number(),
  instances: z.array(
    z.object({
      job: z.string(),
      instance: z.number().int().min(0),
      cpuPercent: z.number().min(0),
      memoryBytes: z.number().min(0),
    }),
  ),
});
export type JobResources = z.infer<typeof JobResourcesSchema>;
