import { z } from 'zod';
import {
  ApiErrorBodySchema,
  InstanceSchema,
  NodeTelemetrySchema,
  NodeViewSchema,
} from '../../../shared/index.js';
import { TOKEN_ROLES } from '../../store/index.js';

/**
 * What the API answers, where shared/ has no schema for it: /api/openapi.json describes the answers with these,
 * and the test that calls every route checks the real answers against them.
 */

export const HealthSchema = z.object({ status: z.literal('ok'), version: z.string() });

/** The contract's error body. */
export const ErrorSchema = z.object({ error: ApiErrorBodySchema });

/** `GET /api/nodes/:id`: the node, its latest telemetry and the instances placed on it. */
export const NodeDetailSchema = NodeViewSchema.extend({
  telemetry: NodeTelemetrySchema.nullable(),
  instances: z.array(InstanceSchema.extend({ job: z.string(), jobName: z.string().nullable() })),
});

/** `DELETE /api/nodes/:id`: what removing the node did. */
export const NodeRemovalSchema = z.object({
  id: z.string(),
  name: z.string(),
  placedAgain: z.number().int(),
  finished: z.number().int(),
  jobsDeleted: z.number().int(),
});

/** A token as `/api/tokens` shows it: never its secret. */
export const TokenViewSchema = z.object({
  name: z.string(),
  role: z.enum(TOKEN_ROLES),
  state: z.enum(['valid', 'expired', 'revoked']),
  createdAt: z.number(),
  expiresAt: z.number().nullable(),
  revokedAt: z.number().nullable(),
});

/** `POST /api/tokens`: the token with its secret, this once. */
export const CreatedTokenSchema = TokenViewSchema.extend({ token: z.string() });

/** `GET /api/nodes/:id/history`: the node's last 30 minutes, a point per 15 s at most. */
export const NodeHistorySchema = z.object({
  node: z.string(),
  stepMs: z.number().int(),
  points: z.array(
    z.object({
      ts: z.number(),
      cpuPercent: z.number().nullable(),
      memoryPercent: z.number().nullable(),
      gpuPercent: z.number().nullable(),
      gpuTemperatureC: z.number().nullable(),
    }),
  ),
});
