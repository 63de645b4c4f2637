import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../../shared/index.js';
import { ClientError } from '../errors.js';

/** The contract's error body: `{"error":{"code","message","details"}}`. */
export function errorBody(error: ClientError) {
  return {
    error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) },
  };
}

/** POST bodies must be JSON: anything else is 415 before parsing. */
export const requireJson: RequestHandler = (req, _res, next) => {
  const hasBody =
    Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (req.method !== 'GET' && req.method !== 'HEAD' && hasBody && !req.is('application/json')) {
    next(new ClientError(415, 'unsupported_media_type', 'send the body as application/json'));
    return;
  }
  next();
};

export const unknownRoute: RequestHandler = (req, _res, next) => {
  next(new ClientError(404, 'not_found', `no route ${req.method} ${req.path}`));
};

/** Maps every error to the contract's format; body-parser's errors are the client's, never a 500. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error, _req, res, _next) => {
    let clientError: ClientError | undefined;
    if (error instanceof ClientError) clientError = error;
    else if (error?.type === 'entity.too.large') {
      clientError = new ClientError(413, 'payload_too_large', 'the body is over 1 MiB');
    } else if (error?.type === 'entity.parse.failed') {
      clientError = new ClientError(400, 'invalid_json', `the body is not valid JSON: ${error.message}`, [
        { path: '(body)', message: 'not valid JSON' },
      ]);
    } else if (typeof error?.status === 'number' && error.status >= 400 && error.status < 500) {
      clientError = new ClientError(400, 'bad_request', String(error.message ?? 'bad request'));
    }
    if (clientError) {
      // A limit of this server (streams): worth trying again in a while, as a well-behaved client does.
      if (clientError.status === 503) res.set('Retry-After', '5');
      res.status(clientError.status).json(errorBody(clientError));
      return;
    }
    logger.error({ err: error?.stack ?? String(error) }, 'request failed');
    res
      .status(500)
      .json({ error: { code: 'internal', message: 'internal error; see the cluster manager log' } });
  };
}
