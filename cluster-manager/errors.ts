import type { FieldProblem } from '../shared/index.js';

/**
 * An error a client caused, one the cluster manager answers for a node it asked (502, 504), or one to wait out
 * (503: a limit of this server is reached); mapped once to an HTTP status and the contract's error body.
 */
export class ClientError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 415 | 502 | 503 | 504,
    readonly code: string,
    message: string,
    readonly details?: FieldProblem[],
  ) {
    super(message);
  }
}

export const notFound = (what: string, id: string) =>
  new ClientError(404, 'not_found', `${what} "${id}" not found`);

export const conflict = (message: string, details?: FieldProblem[]) =>
  new ClientError(409, 'conflict', message, details);

export const invalid = (message: string, details: FieldProblem[]) =>
  new ClientError(400, 'invalid_input', message, details);

/** The overlay has no address left for what was asked: refused whole, nothing created. */
export const addressPoolExhausted = (message: string) =>
  new ClientError(409, 'address_pool_exhausted', message, [
    { path: 'replicas', message: 'more instances than the overlay has addresses free' },
  ]);
