import { chmod, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import type { z } from 'zod';
import {
  type AttachRequest,
  AttachRequestSchema,
  type AttachResponse,
  type DetachRequest,
  DetachRequestSchema,
  fieldProblems,
  type Logger,
  type NetManagerStatus,
  type NodeHandover,
  NodeHandoverSchema,
  parseJson,
} from '../shared/index.js';
import { NetManagerError } from './errors.js';

/** What the local API serves; the net manager implements it. */
export interface LocalApiHandlers {
  status(): NetManagerStatus;
  handOver(handover: NodeHandover): Promise<void>;
  attach(request: AttachRequest): Promise<AttachResponse>;
  detach(request: DetachRequest): Promise<void>;
  attachments(): unknown;
  routes(): unknown;
}

const MAX_BODY_BYTES = 64 * 1024;

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, error: NetManagerError): void {
  send(res, error.status, {
    error: {
      code: error.code,
      message: error.message,
      ...(error.details.length ? { details: error.details } : {}),
    },
  });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new NetManagerError('invalid_input', 'body over 64 KiB', 413));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function parseBody<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  const json = parseJson(await readBody(req));
  if (json === undefined) throw new NetManagerError('invalid_input', 'the body is not JSON', 400);
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new NetManagerError('invalid_input', 'invalid request', 400, fieldProblems(parsed.error));
  return parsed.data;
}

/**
 * The net manager's local API: HTTP on a unix socket only root can open (it attaches containers by pid).
 * `GET /v1/status`, `POST /v1/node`, `POST /v1/attach`, `POST /v1/detach`, `GET /v1/attachments`,
 * `GET /v1/routes`.
 */
export async function startLocalApi(
  socketPath: string,
  handlers: LocalApiHandlers,
  logger: Logger,
): Promise<Server> {
  await removeStaleSocket(socketPath);
  const server = createServer((req, res) => {
    void route(req, res).catch((error: unknown) => {
      if (error instanceof NetManagerError) return sendError(res, error);
      logger.error({ err: (error as Error).stack, url: req.url }, 'local API request failed');
      sendError(res, new NetManagerError('internal', (error as Error).message, 500));
    });
  });
  const route = async (req: IncomingMessage, res: ServerResponse) => {
    const key = `${req.method} ${req.url}`;
    switch (key) {
      case 'GET /v1/status':
        return send(res, 200, handlers.status());
      case 'GET /v1/attachments':
        return send(res, 200, handlers.attachments());
      case 'GET /v1/routes':
        return send(res, 200, handlers.routes());
      case 'POST /v1/node':
        await handlers.handOver(await parseBody(req, NodeHandoverSchema));
        return send(res, 200, handlers.status());
      case 'POST /v1/attach':
        return send(res, 200, await handlers.attach(await parseBody(req, AttachRequestSchema)));
      case 'POST /v1/detach':
        await handlers.detach(await parseBody(req, DetachRequestSchema));
        return send(res, 204);
      default:
        throw new NetManagerError('not_found', `no route ${key}`, 404);
    }
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o600);
  return server;
}

/** A socket file left by a crash is removed; one a live net manager answers on is not: that is an error. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another net manager is running on ${socketPath}`);
  await rm(socketPath, { force: true });
}
