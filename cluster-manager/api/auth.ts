import type { RequestHandler } from 'express';
import { ClientError } from '../errors.js';
import { sameSecret } from '../secrets.js';

/** `Authorization: Bearer <api token>` on every route it guards. */
export function requireApiToken(apiToken: string): RequestHandler {
  return (req, _res, next) => {
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match || !sameSecret(match[1]!.trim(), apiToken)) {
      next(new ClientError(401, 'unauthorized', 'send Authorization: Bearer <api token>'));
      return;
    }
    next();
  };
}
