import { z } from 'zod';
import { Ipv4Schema } from './net.js';

/** Job names are DNS labels, as in Kubernetes and Nomad. */
export const JOB_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export const TECHNOLOGIES = ['docker', 'native'] as const;
export type Technology = (typeof TECHNOLOGIES)[number];
export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;
export const ARCHES = ['amd64', 'arm64', 'arm-7'] as const;

export const PortMappingSchema = z.strictObject({
  container: z.number().int().min(1).max(65535),
  host: z.number().int().min(1).max(65535).optional(),
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
});
export type PortMapping = z.infer<typeof PortMappingSchema>;

export const ResourcesSchema = z.strictObject({
  cpus: z.number().positive().max(1024).optional(),
  memoryMB: z
    .number()
    .int()
    .positive()
    .max(16 * 1024 * 1024)
    .optional(),
  gpus: z.number().int().min(0).max(64).default(0),
  pids: z.number().int().positive().max(4_194_304).optional(),
});
export type Resources = z.infer<typeof ResourcesSchema>;

export const RestartSchema = z.strictObject({
  policy: z.enum(RESTART_POLICIES).default('always'),
  maxRetries: z.number().int().min(0).max(1_000_000).default(5),
});
export type Restart = z.infer<typeof RestartSchema>;

export const ConstraintsSchema = z.strictObject({
  nodes: z.array(z.string().min(1).max(253)).max(1000).optional(),
  arch: z.array(z.enum(ARCHES)).max(3).optional(),
  labels: z.record(z.string().min(1).max(253), z.string().max(253)).optional(),
  sensors: z.array(z.string().min(1).max(253)).max(100).optional(),
});
export type Constraints = z.infer<typeof ConstraintsSchema>;

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name');

/**
 * What the cluster manager does with an instance that failed on its node (its restart policy gave up, or the
 * node refused to run it): place it again, on another node where one fits, up to `attempts` times per
 * `intervalMs`, after `delayMs` doubling with each attempt up to `maxDelayMs` (Nomad's `reschedule` block).
 * `attempts: 0` leaves failed instances failed.
 */
export const DEFAULT_RESCHEDULE = { attempts: 3, intervalMs: 3_600_000, delayMs: 5000, maxDelayMs: 300_000 };
export const RescheduleSchema = z
  .strictObject({
    attempts: z.number().int().min(0).max(1000).default(DEFAULT_RESCHEDULE.attempts),
    intervalMs: z
      .number()
      .int()
      .min(1000)
      .max(7 * 86_400_000)
      .default(DEFAULT_RESCHEDULE.intervalMs),
    delayMs: z.number().int().min(0).max(86_400_000).default(DEFAULT_RESCHEDULE.delayMs),
    maxDelayMs: z.number().int().min(0).max(86_400_000).default(DEFAULT_RESCHEDULE.maxDelayMs),
  })
  .refine((policy) => policy.maxDelayMs >= policy.delayMs, {
    message: 'maxDelayMs must be at least delayMs',
    path: ['maxDelayMs'],
  });

/**
 * How a changed spec rolls out (Nomad's `update` block): at most `maxParallel` new instances start at once, each
 * must stay healthy for `minHealthyTimeMs` before an old one stops (make-before-break), and an update whose new
 * instances are not healthy within `healthyDeadlineMs` fails: with `autoRevert`, the job goes back to the last
 * version that ran healthy. Optional in the spec (older node engines refuse keys they do not know); these are
 * the defaults.
 */
export const DEFAULT_UPDATE = {
  maxParallel: 1,
  minHealthyTimeMs: 10_000,
  healthyDeadlineMs: 300_000,
  autoRevert: true,
};
export const UpdateSchema = z
  .strictObject({
    maxParallel: z.number().int().min(1).max(1000).default(DEFAULT_UPDATE.maxParallel),
    minHealthyTimeMs: z.number().int().min(0).max(3_600_000).default(DEFAULT_UPDATE.minHealthyTimeMs),
    healthyDeadlineMs: z.number().int().min(1000).max(86_400_000).default(DEFAULT_UPDATE.healthyDeadlineMs),
    autoRevert: z.boolean().default(DEFAULT_UPDATE.autoRevert),
  })
  .refine((policy) => policy.healthyDeadlineMs > policy.minHealthyTimeMs, {
    message: 'healthyDeadlineMs must be longer than minHealthyTimeMs',
    path: ['healthyDeadlineMs'],
  });
export type UpdatePolicy = z.infer<typeof UpdateSchema>;

/** A spec's update policy: its `update` block, or the defaults when it has none. */
export function updatePolicyOf(spec: { update?: UpdatePolicy }): UpdatePolicy {
  return spec.update ?? DEFAULT_UPDATE;
}

/**
 * A check the node runs on each running instance: a command (in the container for Docker, on the host with the
 * job's env for native; exit 0 is healthy) or an HTTP GET on the instance's port (2xx and 3xx are healthy).
 * `failures` checks in a row that fail make it unhealthy; one that passes makes it healthy again.
 */
export const HealthCheckSchema = z
  .strictObject({
    command: z.array(z.string().max(4096)).min(1).max(100).optional(),
    http: z
      .strictObject({
        port: z.number().int().min(1).max(65535),
        path: z.string().startsWith('/', 'a path starting with /').max(2048).default('/'),
      })
      .optional(),
    intervalMs: z.number().int().min(500).max(3_600_000).default(5000),
    timeoutMs: z.number().int().min(100).max(600_000).default(2000),
    failures: z.number().int().min(1).max(100).default(3),
  })
  .refine((check) => (check.command === undefined) !== (check.http === undefined), {
    message: 'a health check has either a command or http, not both',
  });
export type HealthCheck = z.infer<typeof HealthCheckSchema>;

/** What an operator posts to `POST /api/jobs`. Defaults are filled in on parse. */
export const JobSpecSchema = z
  .strictObject({
    name: z.string().regex(JOB_NAME_PATTERN, 'a lowercase DNS label (a-z, 0-9, -; at most 63 characters)'),
    image: z.string().min(1).max(4096),
    technology: z.enum(TECHNOLOGIES).default('docker'),
    command: z.array(z.string().max(65536)).max(1000).optional(),
    env: z.record(envName, z.string().max(65536)).default({}),
    ports: z.array(PortMappingSchema).max(100).default([]),
    resources: ResourcesSchema.default({ gpus: 0 }),
    replicas: z.number().int().min(1).max(1000).default(1),
    restart: RestartSchema.default({ policy: 'always', maxRetries: 5 }),
    devices: z.array(z.string().startsWith('/dev/', 'a path under /dev/')).max(100).default([]),
    disconnect: z
      .strictObject({ replaceAfterMs: z.number().int().min(0).max(86_400_000).default(0) })
      .default({
        replaceAfterMs: 0,
      }),
    reschedule: RescheduleSchema.default(DEFAULT_RESCHEDULE),
    constraints: ConstraintsSchema.default({}),
    /** Overrides the node's `--log-max-size-mb` / `--log-max-files` for this job's output. */
    logs: z
      .strictObject({
        maxSizeMB: z.number().int().min(1).max(10_240).optional(),
        maxFiles: z.number().int().min(1).max(100).optional(),
      })
      .optional(),
    /** How an update rolls out; DEFAULT_UPDATE when absent. */
    update: UpdateSchema.optional(),
    /** A health check the node runs; without one, an instance is healthy while it runs. */
    health: HealthCheckSchema.optional(),
  })
  .superRefine((spec, ctx) => {
    if (spec.technology === 'native' && !spec.image.startsWith('/')) {
      ctx.addIssue({
        code: 'custom',
        path: ['image'],
        message: 'for technology "native", image is the absolute path of an executable on the node',
      });
    }
    const hostPorts = new Set<string>();
    spec.ports.forEach((port, index) => {
      if (port.host === undefined) return;
      const key = `${port.protocol}/${port.host}`;
      if (hostPorts.has(key)) {
        ctx.addIssue({
          code: 'custom',
          path: ['ports', index, 'host'],
          message: `host port ${key} used twice`,
        });
      }
      hostPorts.add(key);
    });
  });
export type JobSpec = z.infer<typeof JobSpecSchema>;
export type JobSpecInput = z.input<typeof JobSpecSchema>;

/** A job spec with the id the cluster manager gave it: what commands carry. */
export const JobDefinitionSchema = z.intersection(
  z.object({ id: z.string().min(1).max(128) }),
  JobSpecSchema,
);
export type JobDefinition = JobSpec & { id: string };

export const INSTANCE_STATUSES = [
  'pending',
  'scheduled',
  'pulling',
  'creating',
  'running',
  'exited',
  'failed',
  'stopping',
  'stopped',
  'lost',
] as const;
export const InstanceStatusSchema = z.enum(INSTANCE_STATUSES);
export type InstanceStatus = z.infer<typeof InstanceStatusSchema>;

/** What the node's health check says of a running instance: no check passed yet, passing, failing. */
export const HEALTH_STATES = ['starting', 'healthy', 'unhealthy'] as const;
export const HealthStateSchema = z.enum(HEALTH_STATES);
export type HealthState = z.infer<typeof HealthStateSchema>;

export const InstanceSchema = z.object({
  number: z.number().int().min(0),
  nodeId: z.string().nullable(),
  nodeName: z.string().nullable().optional(),
  status: InstanceStatusSchema,
  detail: z.string(),
  containerId: z.string().nullable(),
  generation: z.number().int().min(0),
  instanceIp: Ipv4Schema.optional(),
  namespaceIp: Ipv4Schema.optional(),
  restarts: z.number().int().min(0),
  /** The job version it runs (see `GET /api/jobs/:id/versions`). */
  version: z.number().int().min(1),
  /** Its health check's verdict, for a job with one, while it runs. */
  health: HealthStateSchema.optional(),
  startedAt: z.number().optional(),
  exitCode: z.number().int().optional(),
  updatedAt: z.number(),
});
export type Instance = z.infer<typeof InstanceSchema>;

export const JOB_STATES = ['active', 'deleting'] as const;
export type JobState = (typeof JOB_STATES)[number];

/**
 * Where a version's roll-out is: `running` while instances are replaced, then `succeeded` (the version is
 * stable), `failed` (its new instances were not healthy in time), or `superseded` (another update came first).
 */
export const ROLLOUT_STATES = ['running', 'succeeded', 'failed', 'superseded'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

export const RolloutSchema = z.object({
  /** The version rolled out, and the one it replaces (0 for the job's first). */
  version: z.number().int().min(1),
  from: z.number().int().min(0),
  state: z.enum(ROLLOUT_STATES),
  /** The failed version this one reverts, for an automatic revert. */
  revertOf: z.number().int().min(1).optional(),
  startedAt: z.number(),
  updatedAt: z.number(),
  /** How far it is (`1 of 3 new healthy, 2 old left`), or why it failed. */
  detail: z.string(),
});
export type Rollout = z.infer<typeof RolloutSchema>;

/** One entry of `GET /api/jobs/:id/versions`. */
export const JobVersionSchema = z.object({
  version: z.number().int().min(1),
  spec: JobSpecSchema,
  createdAt: z.number(),
  /** Its roll-out succeeded: what an automatic revert goes back to. */
  stable: z.boolean(),
});
export type JobVersion = z.infer<typeof JobVersionSchema>;

/** A job as the API returns it: the spec, its id and state, and its instances. */
export const JobSchema = z.object({
  id: z.string(),
  ...JobSpecSchema.shape,
  /** The version of the spec shown, the one the job rolls to. */
  version: z.number().int().min(1),
  /** The latest roll-out, the job's first placement included. */
  rollout: RolloutSchema.optional(),
  state: z.enum(JOB_STATES),
  createdAt: z.number(),
  updatedAt: z.number(),
  /** Its overlay service IP. */
  serviceIp: Ipv4Schema.optional(),
  instances: z.array(InstanceSchema),
  /** How many instances are in each status (statuses with none are left out). */
  instanceCounts: z.partialRecord(InstanceStatusSchema, z.number().int()),
});
export type Job = z.infer<typeof JobSchema>;

/** What an update does: nothing, a scale, a new version that restarts nothing, or a roll-out. */
export const UPDATE_ACTIONS = ['none', 'scale', 'in-place', 'rollout'] as const;
export type UpdateAction = (typeof UPDATE_ACTIONS)[number];

/** What `PUT /api/jobs/:id` did: the kind of change and the top-level fields that changed. */
export const JobChangeSchema = z.object({ action: z.enum(UPDATE_ACTIONS), changed: z.array(z.string()) });
export type JobChange = z.infer<typeof JobChangeSchema>;

/**
 * What `POST /api/jobs?dryRun=true` and `PUT /api/jobs/:id?dryRun=true` answer: where each instance would go
 * now, or why it could not, and for an update what changes and how many running instances a roll-out replaces.
 */
export const JobPlanSchema = z.object({
  dryRun: z.literal(true),
  name: z.string(),
  instances: z.array(
    z.object({ number: z.number().int().min(0), node: z.string().nullable(), reason: z.string().optional() }),
  ),
  update: JobChangeSchema.extend({
    version: z.number().int().min(1),
    replaced: z.number().int().min(0),
  }).optional(),
});
export type JobPlan = z.infer<typeof JobPlanSchema>;
