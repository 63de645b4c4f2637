import type { Request, Response } from 'express';
import { Router } from 'express';
import { z } from 'zod';
import {
  type FieldProblem,
  LOG_STREAM_CHOICES,
  type LogSince,
  type LogStreamChoice,
  MAX_LOG_TAIL,
  parseLogSince,
} from '../../../shared/index.js';
import { ClientError, invalid, notFound } from '../../errors.js';
import type { NodeLiveness } from '../../liveness/node-liveness.js';
import type { LogRelay } from '../../logs/log-relay.js';
import type { Store } from '../../store/index.js';

/** What `GET /api/jobs/:id/instances/:n/logs` takes. */
export interface LogQuery {
  follow: boolean;
  tail?: number;
  since?: LogSince;
  streams: LogStreamChoice;
}

/**
 * The query as the OpenAPI document describes it; `parseLogQuery` is what reads it (it says more precisely what
 * is wrong with a value than a schema would).
 */
export const LogQueryDocumentSchema = z.object({
  follow: z.string().optional().describe('`true` (or `1`): then what it writes until it stops'),
  tail: z.string().optional().describe(`the last lines only (at most ${MAX_LOG_TAIL}), or \`all\``),
  since: z.string().optional().describe('from this time on: `90s`, `10m`, an RFC 3339 time or epoch ms'),
  stream: z.enum(LOG_STREAM_CHOICES).optional().describe('`stdout` or `stderr` only (default: both)'),
});

const QUERY_PARAMETERS = Object.keys(LogQueryDocumentSchema.shape);

/**
 * The query of a log request: `follow` (true/false, 1/0), `tail` (lines, or `all`), `since` (90s, 10m, an RFC 3339
 * time or epoch ms) and `stream` (all, stdout, stderr). Each at most once; anything else is refused.
 */
export function parseLogQuery(query: Request['query']): LogQuery | { problems: FieldProblem[] } {
  const problems: FieldProblem[] = [];
  const single = (name: string): string | undefined => {
    const value = query[name];
    if (value === undefined) return undefined;
    if (typeof value !== 'string') {
      problems.push({ path: name, message: 'give it once, as one value' });
      return undefined;
    }
    return value;
  };
  for (const name of Object.keys(query))
    if (!QUERY_PARAMETERS.includes(name))
      problems.push({ path: name, message: `unknown parameter (known: ${QUERY_PARAMETERS.join(', ')})` });
  const result: LogQuery = { follow: false, streams: 'all' };
  const follow = single('follow');
  if (follow !== undefined) {
    if (['true', '1'].includes(follow)) result.follow = true;
    else if (!['false', '0'].includes(follow)) problems.push({ path: 'follow', message: 'true or false' });
  }
  const tail = single('tail');
  if (tail !== undefined && tail !== 'all') {
    if (/^\d{1,7}$/.test(tail) && Number(tail) <= MAX_LOG_TAIL) result.tail = Number(tail);
    else problems.push({ path: 'tail', message: `a number of lines from 0 to ${MAX_LOG_TAIL}, or all` });
  }
  const since = single('since');
  if (since !== undefined) {
    const parsed = parseLogSince(since);
    if ('since' in parsed) result.since = parsed.since;
    else problems.push({ path: 'since', message: parsed.problem });
  }
  const stream = single('stream');
  if (stream !== undefined) {
    if ((LOG_STREAM_CHOICES as readonly string[]).includes(stream))
      result.streams = stream as LogStreamChoice;
    else problems.push({ path: 'stream', message: `one of ${LOG_STREAM_CHOICES.join(', ')}` });
  }
  return problems.length > 0 ? { problems } : result;
}

/**
 * `GET /api/jobs/:id/instances/:n/logs`: the instance's output, streamed from its node as `text/plain` (chunked),
 * at the pace the reader takes it. Before anything is sent the answer may still be an error (404, 409, 502, 503,
 * 504); once the output flows, a stream that breaks off (the node went offline...) ends with a line saying why,
 * and the connection is closed without ending the chunked body, so that a program reading it sees the break.
 */
export function logRoutes(deps: { store: Store; liveness: NodeLiveness; logs: LogRelay }): Router {
  const router = Router();
  router.get('/:id/instances/:number/logs', async (req, res) => {
    const query = parseLogQuery(req.query);
    if ('problems' in query) throw invalid('invalid log query', query.problems);
    if (!/^\d{1,6}$/.test(req.params.number))
      throw invalid('invalid instance number', [{ path: 'instance', message: 'a whole number (0, 1, ...)' }]);
    const number = Number(req.params.number);
    const job = deps.store.jobs.findJob(req.params.id);
    if (!job) throw notFound('job', req.params.id);
    const instance = deps.store.jobs.getInstance(job.id, number);
    if (!instance) throw notFound('instance', `${job.name}#${number}`);
    if (instance.nodeId === null)
      throw new ClientError(
        409,
        'not_placed',
        `${job.name}#${number} is ${instance.status}: not placed on a node, so it has no output`,
      );
    const nodeName = deps.store.nodes.nameOf(instance.nodeId);
    if (!deps.liveness.isOnline(instance.nodeId))
      throw new ClientError(
        409,
        'node_offline',
        `${job.name}#${number} is on node ${nodeName}, which is offline`,
      );
    const stream = deps.logs.open({
      nodeId: instance.nodeId,
      nodeName,
      jobId: job.id,
      instance: number,
      generation: instance.generation,
      follow: query.follow,
      streams: query.streams,
      ...(query.tail !== undefined ? { tail: query.tail } : {}),
      ...(query.since !== undefined ? { since: query.since } : {}),
    });
    // The reader left (before or after the output opened): the node stops reading.
    let readerLeft = false;
    res.on('close', () => {
      readerLeft = true;
      stream.cancel();
    });
    try {
      await stream.opened;
    } catch (error) {
      if (readerLeft) return;
      throw error;
    }
    res.status(200);
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.flushHeaders();
    res.on('drain', () => stream.drained());
    stream.attach({
      write: (text) => res.write(text),
      end: (broken) => (broken === undefined ? res.end() : breakOff(res, broken)),
    });
  });
  return router;
}

/** Says why in the body, then closes the connection without ending the chunked body: the reader sees a break. */
function breakOff(res: Response, why: string): void {
  res.write(`\n[edge: the log stream broke off: ${why}]\n`);
  const socket = res.socket;
  if (socket) socket.end();
  else res.destroy();
}
