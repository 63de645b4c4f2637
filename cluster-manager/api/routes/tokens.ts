import { Router } from 'express';
import { z } from 'zod';
import type { AccessTokens } from '../../access/access-tokens.js';
import { TOKEN_ROLES } from '../../store/index.js';
import { parseBody } from '../body.js';

export const CreateTokenSchema = z.strictObject({
  name: z
    .string()
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
      'letters, digits, . _ - (up to 63, starting with a letter or digit)',
    ),
  role: z.enum(TOKEN_ROLES).default('join'),
  /** How long it is valid from now; none: until revoked. */
  ttlSeconds: z
    .number()
    .int()
    .min(60)
    .max(10 * 365 * 24 * 3600)
    .optional(),
});

/** `/api/tokens` (admin only, see authorization.ts): list, create, revoke. */
export function tokenRoutes(tokens: AccessTokens): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    res.json(tokens.list());
  });
  router.post('/', (req, res) => {
    const { name, role, ttlSeconds } = parseBody(
      CreateTokenSchema,
      req.body,
      'the token {name, role, ttlSeconds}',
    );
    res.status(201).json(tokens.create(name, role, ttlSeconds === undefined ? undefined : ttlSeconds * 1000));
  });
  router.delete('/:name', (req, res) => {
    res.json(tokens.revoke(req.params.name));
  });
  return router;
}
