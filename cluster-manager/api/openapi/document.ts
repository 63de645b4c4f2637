import { z } from 'zod';
import {
  ClusterEventSchema,
  JobPlanSchema,
  JobSchema,
  JobSpecSchema,
  JobVersionSchema,
  NodeViewSchema,
  VERSION,
} from '../../../shared/index.js';
import { PAGE_PARAMETERS, type QueryParameterDoc } from '../pagination.js';
import {
  CreatedTokenSchema,
  ErrorSchema,
  HealthSchema,
  NodeDetailSchema,
  NodeHistorySchema,
  NodeRemovalSchema,
  TokenViewSchema,
} from './answers.js';
import { type Answer, OPERATIONS, type Operation } from './operations.js';

type JsonSchema = Record<string, unknown>;

/** Schemas named in `components.schemas` and referred to wherever an operation uses them. */
const COMPONENTS: { name: string; schema: z.ZodType; io: 'input' | 'output' }[] = [
  { name: 'JobSpec', schema: JobSpecSchema, io: 'input' },
  { name: 'Job', schema: JobSchema, io: 'output' },
  { name: 'JobPlan', schema: JobPlanSchema, io: 'output' },
  { name: 'JobVersion', schema: JobVersionSchema, io: 'output' },
  { name: 'Node', schema: NodeViewSchema, io: 'output' },
  { name: 'NodeDetail', schema: NodeDetailSchema, io: 'output' },
  { name: 'NodeRemoval', schema: NodeRemovalSchema, io: 'output' },
  { name: 'NodeHistory', schema: NodeHistorySchema, io: 'output' },
  { name: 'Event', schema: ClusterEventSchema, io: 'output' },
  { name: 'Token', schema: TokenViewSchema, io: 'output' },
  { name: 'CreatedToken', schema: CreatedTokenSchema, io: 'output' },
  { name: 'Health', schema: HealthSchema, io: 'output' },
  { name: 'Error', schema: ErrorSchema, io: 'output' },
];

const errorContent = { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } };

/**
 * `/api/openapi.json`: OpenAPI 3.1, built from OPERATIONS and the zod schemas the routes parse with and answer
 * with (request bodies and queries as they are sent, `io: input`, defaults optional; answers as they come).
 */
export function openApiDocument(operations: Operation[] = OPERATIONS): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const operation of operations) {
    paths[operation.path] ??= {};
    paths[operation.path]![operation.method] = describeOperation(operation);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'edge orchestrator: cluster manager API',
      version: VERSION,
      description:
        'The operator API of the cluster manager (docs/api.md has the whole contract). Every route but the public ' +
        'ones takes `Authorization: Bearer <token>`; errors are always `{"error": {code, message, details?}}`.',
    },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an API token' } },
      schemas: Object.fromEntries(COMPONENTS.map(({ name, schema, io }) => [name, jsonSchema(schema, io)])),
    },
  };
}

function describeOperation(operation: Operation): JsonSchema {
  const { params = {}, query, headers, list, body, answers } = operation;
  const parameters = [
    ...Object.entries(params).map(([name, description]) => ({
      name,
      in: 'path',
      required: true,
      description,
      schema: { type: 'string' },
    })),
    ...(query ? Object.entries(query.shape).map(([name, field]) => parameter('query', name, field)) : []),
    ...(headers
      ? Object.entries(headers.shape).map(([name, field]) => parameter('header', name, field))
      : []),
    ...(list
      ? [
          ...Object.entries(list).map(([name, parser]) => listParameter(name, parser.doc)),
          ...Object.entries(PAGE_PARAMETERS).map(([name, doc]) => listParameter(name, doc)),
        ]
      : []),
  ];
  return {
    summary: operation.summary,
    tags: [operation.path.split('/')[operation.path.startsWith('/api/') ? 2 : 1]],
    ...(operation.public ? { security: [] } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(body
      ? {
          requestBody: {
            required: true,
            content: { 'application/json': { schema: schemaOf(body, 'input') } },
          },
        }
      : {}),
    responses: {
      ...Object.fromEntries(Object.entries(answers).map(([status, answer]) => [status, response(answer)])),
      ...(operation.public
        ? {}
        : {
            401: { description: 'no token, or not a valid one', content: errorContent },
            403: { description: "the token's role does not allow this", content: errorContent },
          }),
      default: { description: 'an error (`code` says which: docs/api.md)', content: errorContent },
    },
  };
}

function response(answer: Answer): JsonSchema {
  if ('json' in answer)
    return {
      description: answer.description,
      content: { 'application/json': { schema: schemaOf(answer.json, 'output') } },
    };
  return { description: answer.description, content: { [answer.media]: { schema: answer.schema } } };
}

function parameter(where: 'query' | 'header', name: string, field: z.ZodType): JsonSchema {
  const { description, ...schema } = jsonSchema(field, 'input');
  return {
    name,
    in: where,
    required: !field.safeParse(undefined).success,
    ...(description ? { description } : {}),
    schema,
  };
}

function listParameter(name: string, doc: QueryParameterDoc): JsonSchema {
  const { description: _, ...one } = jsonSchema(doc.schema, 'input');
  return {
    name,
    in: 'query',
    required: false,
    description: doc.description,
    ...(doc.repeatable ? { schema: { type: 'array', items: one }, explode: true } : { schema: one }),
  };
}

/** A named component by reference (also as the items of an array), anything else inline. */
function schemaOf(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const named = COMPONENTS.find((component) => component.schema === schema && component.io === io);
  if (named) return { $ref: `#/components/schemas/${named.name}` };
  if (schema instanceof z.ZodArray)
    return { type: 'array', items: schemaOf(schema.element as z.ZodType, io) };
  return jsonSchema(schema, io);
}

/** Formats zod names beside the `pattern` it also writes; no JSON Schema tool knows them. */
const ZOD_ONLY_FORMATS = new Set(['starts_with', 'ends_with', 'includes']);

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  // Refinements and transforms have no JSON Schema: the schema says what it can, the route checks the rest.
  const { $schema: _, ...converted } = z.toJSONSchema(schema, {
    io,
    unrepresentable: 'any',
    override: ({ jsonSchema: converted }) => {
      if (typeof converted.format === 'string' && ZOD_ONLY_FORMATS.has(converted.format))
        delete converted.format;
    },
  }) as JsonSchema;
  return converted;
}
