import { z } from 'zod';
import {
  ClusterEventSchema,
  JobChangeSchema,
  JobPlanSchema,
  JobSchema,
  JobSpecSchema,
  JobVersionSchema,
  NodeLabelPatchSchema,
  NodeViewSchema,
} from '../../../shared/index.js';
import type { FilterParser } from '../pagination.js';
import { EventQuerySchema } from '../routes/events.js';
import {
  CreateJobQuerySchema,
  JOB_LIST_FILTERS,
  MoveRequestSchema,
  ReplicateRequestSchema,
} from '../routes/jobs.js';
import { LogQueryDocumentSchema } from '../routes/logs.js';
import { NODE_LIST_FILTERS } from '../routes/nodes.js';
import { StreamHeadersSchema, StreamQuerySchema } from '../routes/stream.js';
import { CreateTokenSchema } from '../routes/tokens.js';
import {
  CreatedTokenSchema,
  ErrorSchema,
  HealthSchema,
  NodeDetailSchema,
  NodeHistorySchema,
  NodeRemovalSchema,
  TokenViewSchema,
} from './answers.js';

/** An answer of an operation: a JSON body of this schema, or a body of another media type. */
export type Answer =
  | { description: string; json: z.ZodType }
  | { description: string; media: string; schema: { type: 'string'; description?: string } };

export interface Operation {
  method: 'get' | 'post' | 'put' | 'patch' | 'delete';
  /** As OpenAPI writes it: `/api/jobs/{id}`. */
  path: string;
  summary: string;
  /** Answered without a token. */
  public?: boolean;
  /** What each `{parameter}` of the path is. */
  params?: Record<string, string>;
  /** The query parameters the handler parses with this schema (each key one parameter). */
  query?: z.ZodObject;
  /** Request headers the handler parses with this schema (each key one header). */
  headers?: z.ZodObject;
  /** A list's filters (with `limit` and `cursor`): what its handler parses with parseListQuery. */
  list?: Record<string, FilterParser<unknown>>;
  /** The JSON body the handler parses with this schema. */
  body?: z.ZodType;
  /** By status; errors (the contract's error body) are added to every operation. */
  answers: Record<number, Answer>;
}

const json = (description: string, schema: z.ZodType): Answer => ({ description, json: schema });
const text = (description: string, media: string): Answer => ({
  description,
  media,
  schema: { type: 'string' },
});

const JOB = { id: "the job's id, or the name of a live job" };
const NODE = { id: "the node's id or name" };

/**
 * Every route of the operator API, as /api/openapi.json describes it, with the schemas its handler parses and
 * answers with. Adding a route: one entry here (method, path with `{parameters}`, summary, `body`/`query`
 * schemas the handler parses, `answers`). test/integration/cluster-manager-openapi.test.ts fails while a route
 * of the app is missing here or an entry answers as an unknown route.
 */
export const OPERATIONS: Operation[] = [
  {
    method: 'get',
    path: '/api/health',
    summary: 'whether the cluster manager runs, and its version',
    public: true,
    answers: { 200: json('it runs', HealthSchema) },
  },
  {
    method: 'get',
    path: '/api/cluster/ca',
    summary: 'the cluster CA (PEM), for a node to pin against its join token',
    public: true,
    answers: { 200: text('the CA certificate', 'application/x-pem-file') },
  },
  {
    method: 'get',
    path: '/api/openapi.json',
    summary: 'this document',
    public: true,
    answers: { 200: json('the OpenAPI 3.1 document of this API', z.record(z.string(), z.unknown())) },
  },
  {
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics of the cluster manager and the fleet',
    answers: { 200: text('Prometheus text format', 'text/plain') },
  },
  {
    method: 'get',
    path: '/api/nodes',
    summary: 'nodes, by name then id; one page with `limit`',
    list: NODE_LIST_FILTERS,
    answers: { 200: json('the nodes (X-Next-Cursor and Link when more follow)', z.array(NodeViewSchema)) },
  },
  {
    method: 'get',
    path: '/api/nodes/{id}',
    summary: 'one node with its latest telemetry and its instances',
    params: NODE,
    answers: { 200: json('the node', NodeDetailSchema) },
  },
  {
    method: 'post',
    path: '/api/nodes/{id}/cordon',
    summary: 'no new instance is placed or moved there; what runs there stays',
    params: NODE,
    answers: { 200: json('the node, cordoned', NodeViewSchema) },
  },
  {
    method: 'get',
    path: '/api/nodes/{id}/history',
    summary: "the node's CPU, memory and GPU figures of the last 30 minutes, oldest first (in memory only)",
    params: NODE,
    answers: { 200: json('the points', NodeHistorySchema) },
  },
  {
    method: 'post',
    path: '/api/nodes/{id}/drain',
    summary: 'cordons the node and moves every instance away, make-before-break',
    params: NODE,
    answers: { 200: json('the node, cordoned and draining', NodeViewSchema) },
  },
  {
    method: 'post',
    path: '/api/nodes/{id}/uncordon',
    summary: 'the node takes new instances again',
    params: NODE,
    answers: { 200: json('the node', NodeViewSchema) },
  },
  {
    method: 'patch',
    path: '/api/nodes/{id}/labels',
    summary: "sets (a value) or removes (null) labels, over the node's own",
    params: NODE,
    body: NodeLabelPatchSchema,
    answers: { 200: json('the node', NodeViewSchema) },
  },
  {
    method: 'delete',
    path: '/api/nodes/{id}',
    summary: 'removes the node for good: its instances are placed elsewhere, its secret is revoked',
    params: NODE,
    answers: { 200: json('what the removal did', NodeRemovalSchema) },
  },
  {
    method: 'get',
    path: '/api/jobs',
    summary: 'jobs, oldest first; one page with `limit`',
    list: JOB_LIST_FILTERS,
    answers: { 200: json('the jobs (X-Next-Cursor and Link when more follow)', z.array(JobSchema)) },
  },
  {
    method: 'post',
    path: '/api/jobs',
    summary: 'deploys a job (or, with `dryRun=true`, says where it would go)',
    query: CreateJobQuerySchema,
    body: JobSpecSchema,
    answers: {
      201: json('the job, its instances pending or scheduled', JobSchema),
      200: json('`dryRun=true`: where each instance would go, or why not', JobPlanSchema),
    },
  },
  {
    method: 'get',
    path: '/api/jobs/{id}',
    summary: 'one job with every instance',
    params: JOB,
    answers: { 200: json('the job', JobSchema) },
  },
  {
    method: 'put',
    path: '/api/jobs/{id}',
    summary:
      'applies a full spec: the same one changes nothing, `replicas` alone scales, anything else rolls out a new version',
    params: JOB,
    query: CreateJobQuerySchema,
    body: JobSpecSchema,
    answers: {
      200: json(
        'the job with what the update did (`change`); with `dryRun=true`, what it would do instead',
        z.union([JobSchema.extend({ change: JobChangeSchema }), JobPlanSchema]),
      ),
    },
  },
  {
    method: 'get',
    path: '/api/jobs/{id}/versions',
    summary: "the job's kept versions, newest first",
    params: JOB,
    answers: { 200: json('the versions', z.array(JobVersionSchema)) },
  },
  {
    method: 'get',
    path: '/api/jobs/{id}/instances/{number}/logs',
    summary: "an instance's output, streamed from its node",
    params: { ...JOB, number: 'the instance number' },
    query: LogQueryDocumentSchema,
    answers: {
      200: text('the output as it streams (stdout and stderr unless `stream` picks one)', 'text/plain'),
    },
  },
  {
    method: 'delete',
    path: '/api/jobs/{id}',
    summary: 'deletes the job: the name is free at once; it is gone once every node acked',
    params: JOB,
    answers: { 202: json('the job, deleting', JobSchema) },
  },
  {
    method: 'post',
    path: '/api/jobs/{id}/move',
    summary: 'moves one instance to another node (`to`, or the one the scheduler picks)',
    params: JOB,
    body: MoveRequestSchema,
    answers: { 202: json('the job', JobSchema) },
  },
  {
    method: 'post',
    path: '/api/jobs/{id}/replicate',
    summary: 'sets the number of instances',
    params: JOB,
    body: ReplicateRequestSchema,
    answers: { 202: json('the job', JobSchema) },
  },
  {
    method: 'get',
    path: '/api/tokens',
    summary: 'every token, oldest first (never a secret); admin only',
    answers: { 200: json('the tokens', z.array(TokenViewSchema)) },
  },
  {
    method: 'post',
    path: '/api/tokens',
    summary: 'makes a token; its secret is in this answer only',
    body: CreateTokenSchema,
    answers: { 201: json('the token and its secret', CreatedTokenSchema) },
  },
  {
    method: 'delete',
    path: '/api/tokens/{name}',
    summary: 'revokes a token: it opens nothing from now on',
    params: { name: 'the token name' },
    answers: { 200: json('the token, revoked', TokenViewSchema) },
  },
  {
    method: 'get',
    path: '/api/events',
    summary: 'recent cluster events, newest first',
    query: EventQuerySchema,
    answers: { 200: json('the events', z.array(ClusterEventSchema)) },
  },
  {
    method: 'get',
    path: '/api/stream',
    summary:
      'server-sent events: cluster events as they are recorded, and notices of jobs and nodes that changed',
    query: StreamQuerySchema,
    headers: StreamHeadersSchema,
    answers: {
      200: text(
        'text/event-stream: `event` (id: the event id; data: an event), `job` and `node` (data: {"id"}), ' +
          '`resync` (data: {"reason"}); a comment every 15 s. Send `Last-Event-ID` to resume.',
        'text/event-stream',
      ),
      503: json(
        'as many streams are open as `--max-streams` allows (`Retry-After` says when to try)',
        ErrorSchema,
      ),
    },
  },
];
