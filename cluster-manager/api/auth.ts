import type { RequestHandler } from 'express';
import type { AccessTokens } from '../access/access-tokens.js';
import { allows } from '../access/authorization.js';
import { ClientError } from '../errors.js';

/**
 * `Authorization: Bearer <token>` on every route it guards: a valid token (neither revoked nor expired) whose
 * role allows this method on this path (authorization.ts), else 401 or 403. The token is `res.locals.token`.
 */
export function requireToken(tokens: AccessTokens): RequestHandler {
  return (req, res, next) => {
    const match = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const token = match ? tokens.authenticate(match[1]!.trim()) : undefined;
    if (!token) {
      next(new ClientError(401, 'unauthorized', 'send Authorization: Bearer <api token> (a valid one)'));
      return;
    }
    const path = `${req.baseUrl}${req.path}`.replace(/\/+$/, '') || '/';
    if (!allows(token.role, req.method, path)) {
      next(
        new ClientError(
          403,
          'forbidden',
          `a ${token.role} token may not ${req.method} ${path} (token ${token.name})`,
        ),
      );
      return;
    }
    res.locals.token = token;
    next();
  };
}
