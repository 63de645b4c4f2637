import type { z } from 'zod';
import { fieldProblems } from '../../shared/index.js';
import { invalid } from '../errors.js';

/** Parses a body with its schema or answers 400 naming each bad field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown, what: string): T {
  if (body === undefined)
    throw invalid(`send ${what} as a JSON body`, [{ path: '(body)', message: 'missing' }]);
  const result = schema.safeParse(body);
  if (!result.success) {
    const details = fieldProblems(result.error);
    throw invalid(`invalid ${what}: ${details.map((d) => d.path).join(', ')}`, details);
  }
  return result.data;
}
