import { z } from 'zod';

/** A cluster event as `GET /api/events` returns it and `GET /api/stream` pushes it. */
export const ClusterEventSchema = z.object({
  id: z.number().int().min(1),
  ts: z.number(),
  type: z.string(),
  message: z.string(),
  nodeId: z.string().optional(),
  jobId: z.string().optional(),
});
export type ClusterEvent = z.infer<typeof ClusterEventSchema>;
